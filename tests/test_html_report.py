"""The HTML report: self-contained (images embedded), complete, and its images render in Chromium."""

import base64
import re
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from vlnkit.eval.html_report import write_html_report

from test_eval_runner import release, run  # noqa: F401  (release is a fixture)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def report(release, tmp_path):  # noqa: F811
    """The HTML report of a random run with one failed episode and a memory agent's topology figure."""
    out = tmp_path / "run"
    run(release, out, "agent=random", "agent.name=faulty", "+agent.fail_ids=[12]", "imports=[runner_agents]",
        "max_retries=0")
    (out / "memory").mkdir()
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([0, 1, 1], [0, 0, 1], "o-")
    fig.savefig(out / "memory" / "topology.png")
    plt.close(fig)
    return write_html_report(out)


def test_report_is_self_contained_and_complete(report):
    page = report.read_text()
    assert report.name == "report.html"
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 3  # histograms, trajectories.png, memory/topology.png
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_SIGNATURE)
    assert not re.search(r'(src|href)="(https?:|file:|//)', page)
    assert "memory/topology.png" in page and "trajectories.png" in page
    assert "<h2>Failed episodes</h2>" in page and "ValueError: agent refuses episode 12" in page
    assert "<td class=\"text\">TC (%)</td><td>0.00</td>" in page


def chromium_driver(profile: Path):
    """A headless Chromium driven by selenium, offline, with a fresh profile."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


NO_CHROMIUM = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"


@pytest.mark.skipif(not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()), reason=NO_CHROMIUM)
def test_every_image_renders_in_headless_chromium(report, tmp_path):
    if shutil.which(str(CHROMEDRIVER)) is None:
        pytest.skip(f"{CHROMEDRIVER} is not executable")
    driver = chromium_driver(tmp_path / "profile")
    try:
        driver.get(report.as_uri())
        sizes = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);"
        )
        title = driver.title
    finally:
        driver.quit()
    assert title == "faulty on touchdown/dev"
    assert len(sizes) == 3
    assert all(complete and width > 0 and height > 0 for complete, width, height in sizes), sizes
