"""Screenshots of the HTML explorer for docs/explorer.md, taken in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium (the ``docs`` extra). Run
``python docs/gen_screenshots.py``; it writes ``docs/explorer/*.png`` and prints, for each,
what it clicked and what the page showed, so the pictures can be checked against the text.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "explorer"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.set_page_load_timeout(300)
    return driver


def build(name: str):
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="__graphbp_screenshots__")["build"]()


def tab(driver, view: str) -> None:
    driver.find_element("css selector", f'#tabs button[data-view="{view}"]').click()


def cluster_frame(driver, cid: str):
    return driver.find_element("css selector", f'[id="{cid}"] > path, [id="{cid}"] > polygon')


def cluster_title(driver, cid: str):
    return driver.find_element("css selector", f'[id="{cid}"] > text')


def data(driver) -> dict:
    return driver.execute_script("return JSON.parse(document.getElementById('gb-data').textContent)")


def shot(driver, name: str, what: str) -> None:
    driver.save_screenshot(str(OUT / name))
    print(f"docs/explorer/{name}: {what}")


def mlp(driver, folder: Path) -> None:
    import graphbp as gb

    page = folder / "mlp.html"
    gb.render(build("mlp_digits"), page, collapse="grad")
    driver.get(page.as_uri())
    tab(driver, "joint")
    d = data(driver)
    joint = next(v for v in d["views"] if v["id"] == "joint")
    cid = next(c for c in joint["collapsed"] if "matmul" in joint["clusters"][c]["label"])
    cluster_frame(driver, cid).click()  # unfold the first matmul's gradient cluster
    grad = next(s for s in joint["clusters"][cid]["members"] if d["nodes"][joint["nodes"][s][0]]["op"] == "matmul")
    driver.find_element("id", grad).click()
    row = d["nodes"][joint["nodes"][grad][0]]
    shot(driver, "mlp_digits.joint-selected.png",
         f"joint view; unfolded '{joint['clusters'][cid]['label']}', clicked {row['t']} ({row.get('why', '')}); "
         f"its forward op is outlined, the panel shows the rule and the user's line")
    tab(driver, "equations")
    cells = driver.find_elements("css selector", "#equations mtd.mml-eqn-num")
    shot(driver, "mlp_digits.equations.png",
         f"equations tab; {len(cells)} rows numbered {cells[0].text} … {cells[-1].text} by their steps")


# Sets the view's camera (its SVG viewBox) to the bounding box of an element, with a margin.
_ZOOM_TO = """
const el = arguments[0], svg = el.ownerSVGElement, bb = el.getBBox();
const m = svg.getScreenCTM().inverse().multiply(el.getScreenCTM());
const p = svg.createSVGPoint(), q = svg.createSVGPoint();
p.x = bb.x; p.y = bb.y; q.x = bb.x + bb.width; q.y = bb.y + bb.height;
const a = p.matrixTransform(m), b = q.matrixTransform(m), pad = 0.05 * (b.x - a.x);
svg.setAttribute("viewBox", [a.x - pad, a.y - pad, b.x - a.x + 2 * pad, b.y - a.y + 2 * pad].join(" "));
"""


def lstm(driver, folder: Path) -> None:
    import graphbp as gb

    page = folder / "lstm.html"
    gb.render(build("lstm_charlm"), page, views=["forward", "backward", "joint"], equations=False)
    driver.get(page.as_uri())
    tab(driver, "forward")
    d = data(driver)
    fwd = next(v for v in d["views"] if v["id"] == "forward")
    cid = next(c for c, info in fwd["clusters"].items() if info["kind"] == "body")
    cluster_title(driver, cid).click()  # fold the scan body
    folded = "gb-collapsed" in (driver.find_element("id", cid).get_attribute("class") or "")
    shot(driver, "lstm_charlm.scan-body-folded.png",
         f"forward view; clicked the frame of '{fwd['clusters'][cid]['label']}': folded={folded}")
    cluster_title(driver, cid).click()  # and unfold it again
    scan = next(s for s, rows in fwd["nodes"].items() if d["nodes"][rows[0]]["op"] == "scan")
    driver.find_element("id", scan).click()
    inside = len(fwd["clusters"][cid]["members"])
    shot(driver, "lstm_charlm.scan-body.png",
         f"forward view; unfolded the scan body again ({inside} boxes: one LSTM step) and clicked the scan node")
    tab(driver, "backward")
    bwd = next(v for v in d["views"] if v["id"] == "backward")
    cid = next(c for c, info in bwd["clusters"].items() if info["kind"] == "body")
    member = next(s for s in bwd["clusters"][cid]["members"] if d["nodes"][bwd["nodes"][s][0]]["k"] == "grad")
    driver.find_element("id", member).click()
    driver.execute_script(_ZOOM_TO, driver.find_element("id", cid))  # the camera on the body cluster
    row = d["nodes"][bwd["nodes"][member][0]]
    shot(driver, "lstm_charlm.reverse-scan-body.png",
         f"backward view; the reverse scan's body ({len(bwd['clusters'][cid]['members'])} boxes: the step's "
         f"pullback, carries as violet back edges); clicked {row['t']} ({row.get('why', '')})")


def residual(driver, folder: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_render_large import residual as make

    import graphbp as gb

    page = folder / "residual.html"
    prog = make(135)
    gb.render(prog, page, views=["joint"], equations=False, max_nodes=None)
    driver.get(page.as_uri())
    n = len(driver.find_elements("css selector", "#view-joint g.node"))
    edges = len(driver.find_elements("css selector", "#view-joint g.edge"))
    shot(driver, "residual2000.joint.png", f"joint view of a 135-block residual MLP, every box drawn: {n} boxes, {edges} arrows")
    box = driver.find_element("id", "search")
    box.send_keys("W7\n")  # centre on the first match (the parameter W7) and select it
    svg = driver.find_element("css selector", "#view-joint svg")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    for _ in range(14):  # zoom in around the centre, where the search put W7
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(svg), 0, -400).perform()
    shot(driver, "residual2000.joint-zoomed.png",
         "same page; searched 'W7' (Enter selects and centres it) and zoomed in with the wheel: the arrows "
         "between the columns are straight lines drawn over the layout")


def main() -> int:
    sys.path.insert(0, str(ROOT))
    OUT.mkdir(exist_ok=True)
    driver = browser()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for take in (mlp, lstm, residual):
                if len(sys.argv) < 2 or take.__name__ in sys.argv[1:]:  # e.g. `... gen_screenshots.py lstm`
                    take(driver, Path(tmp))
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
