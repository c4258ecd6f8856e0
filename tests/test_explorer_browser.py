"""The HTML explorer in a real browser: headless Chromium driven by selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``docs`` extra (selenium); CI
installs all three (.ci/run), so there these tests must run: a missing browser fails the
run instead of skipping. Screenshots of every view are written to ``$GRAPHBP_ARTIFACTS``
(default ``test-artifacts/``) as ``explorer-<view>.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

import graphbp as gb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import mlp_digits  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[docs]')"
    if not CHROMIUM or not DRIVER:
        return "chromium / chromedriver not on PATH (apt-get install chromium chromium-driver)"
    if not gb.render.dot_available():
        return "Graphviz's dot is not on PATH"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The digits MLP's explorer with gradient clusters folded, and its JSON payload."""
    if _missing():
        pytest.skip("no browser")
    path = tmp_path_factory.mktemp("explorer") / "mlp.html"
    gb.render(mlp_digits.build(), path, collapse="grad")
    text = path.read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="gb-data">(.*?)</script>', text, re.S)
                      .group(1).replace("<\\/", "</"))
    return path, data


def _artifacts() -> Path:
    out = Path(os.environ.get("GRAPHBP_ARTIFACTS", ROOT / "test-artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _open(driver, path: Path, view: str):
    from selenium.webdriver.common.by import By

    driver.get(path.as_uri())
    driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()
    return By


def _classes(driver, element_id: str) -> set[str]:
    return set((driver.find_element("id", element_id).get_attribute("class") or "").split())


def _view(data: dict, view: str) -> dict:
    return next(v for v in data["views"] if v["id"] == view)


def test_every_view_renders_without_console_errors(browser, page):
    path, data = page
    by = _open(browser, path, "forward")
    out = _artifacts()
    for view in [v["id"] for v in data["views"]]:
        browser.find_element(by.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()
        section = browser.find_element("id", f"view-{view}")
        assert section.is_displayed()
        if view != "equations":
            assert section.find_element(by.CSS_SELECTOR, "svg").size["height"] > 200
        browser.save_screenshot(str(out / f"explorer-{view}.png"))
    assert _errors(browser) == []


def test_unfold_a_cluster_then_click_a_gradient_node_lights_its_forward_op(browser, page):
    path, data = page
    by = _open(browser, path, "joint")
    joint = _view(data, "joint")
    nodes = data["nodes"]
    # the folded gradient cluster of the first matmul, and one matmul gradient node in it
    cid, cluster = next((c, info) for c, info in joint["clusters"].items()
                        if c in joint["collapsed"] and "matmul" in info["label"])
    grad_sid = next(s for s in cluster["members"] if nodes[joint["nodes"][s][0]]["op"] == "matmul")
    assert "gb-hidden" in _classes(browser, grad_sid)
    assert "gb-collapsed" in _classes(browser, cid)
    assert browser.find_element(by.CSS_SELECTOR, f'[id="{cid}"] text.gb-badge').text.endswith("click to unfold")
    browser.find_element(by.CSS_SELECTOR, f'[id="{cid}"] > path, [id="{cid}"] > polygon').click()
    assert "gb-collapsed" not in _classes(browser, cid)
    assert all("gb-hidden" not in _classes(browser, s) for s in cluster["members"])

    browser.find_element("id", grad_sid).click()
    row = nodes[joint["nodes"][grad_sid][0]]
    forward_row = row["pv"][0][0]
    forward_sid = next(s for s, rows in joint["nodes"].items() if forward_row in rows)
    assert "gb-sel" in _classes(browser, grad_sid)
    assert "gb-fwd" in _classes(browser, forward_sid)
    panel = browser.find_element("id", "panel").text
    assert "vjp of matmul_bias_act" in panel or "vjp of matmul" in panel
    assert "mlp_digits.py:" in panel  # the user's line
    browser.save_screenshot(str(_artifacts() / "explorer-joint-gradient-selected.png"))
    assert _errors(browser) == []


def test_click_a_forward_op_lights_its_gradients_and_saved_activations(browser, page):
    path, data = page
    by = _open(browser, path, "joint")
    joint = _view(data, "joint")
    nodes = data["nodes"]
    # the loss op: a forward op of its own (the relus are fused into matmul_bias_act)
    op_sid = next(s for s, rows in joint["nodes"].items()
                  if nodes[rows[0]]["op"] == "softmax_cross_entropy" and len(rows) == 1)
    browser.find_element(by.CSS_SELECTOR, f'[id="{op_sid}"] text').click()
    op_row = joint["nodes"][op_sid][0]
    derived = [i for i, r in enumerate(nodes) if any(p[0] == op_row for p in r.get("pv", []))]
    assert derived
    # the gradient nodes are folded: their cluster is lit instead
    holders = browser.find_elements(by.CSS_SELECTOR, "g.cluster.gb-holds")
    assert holders, "the folded gradient cluster of the loss op is not highlighted"
    panel = browser.find_element("id", "panel").text
    assert "gradient nodes derived from it" in panel and "saved activations its rule reads" in panel
    saved_rows = {x for g in derived for x in nodes[g].get("in", []) if nodes[x].get("sv") and nodes[x]["k"] != "grad"}
    assert saved_rows
    for x in saved_rows:
        sid = next((s for s, rows in joint["nodes"].items() if x in rows), None)
        if sid is not None:
            assert "gb-saved" in _classes(browser, sid) or "gb-sel" in _classes(browser, sid)


def test_search_finds_and_centres_nodes(browser, page):
    path, data = page
    by = _open(browser, path, "forward")
    box = browser.find_element("id", "search")
    box.send_keys("relu")
    count = browser.find_element("id", "search-count").text
    assert re.match(r"[1-9]\d* match", count)
    assert browser.find_elements(by.CSS_SELECTOR, "#view-forward g.node.gb-match")
    svg = browser.find_element(by.CSS_SELECTOR, "#view-forward svg")
    before = svg.get_dom_attribute("viewBox")
    box.send_keys("\n")
    assert browser.find_element("id", "search-count").text.startswith("1 / ")
    assert browser.find_elements(by.CSS_SELECTOR, "#view-forward g.node.gb-sel")
    assert svg.get_dom_attribute("viewBox") != before  # centred on the hit
    assert "relu" in browser.find_element("id", "panel").text
    assert _errors(browser) == []


def test_wheel_zooms_and_fit_restores(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    path, _ = page
    by = _open(browser, path, "forward")
    svg = browser.find_element(by.CSS_SELECTOR, "#view-forward svg")
    home = svg.get_dom_attribute("viewBox")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(svg), 0, -300).perform()
    zoomed = [float(x) for x in svg.get_dom_attribute("viewBox").split()]
    assert zoomed[2] < float(home.split()[2])
    browser.find_element("id", "fit").click()
    assert svg.get_dom_attribute("viewBox") == home


def test_without_scripts_every_view_is_a_static_svg(browser, page):
    path, data = page
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.get(path.as_uri())
        from selenium.webdriver.common.by import By

        shown = [s for s in browser.find_elements(By.CSS_SELECTOR, "section.view") if s.is_displayed()]
        assert len(shown) == len(data["views"])
        assert browser.find_element(By.CSS_SELECTOR, "noscript, .noscript") is not None
        browser.save_screenshot(str(_artifacts() / "explorer-noscript.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


@pytest.mark.parametrize("example", ["mlp_digits", "xor_tanh", "regression_mse"])
def test_equations_typeset_with_the_bundled_katex(browser, tmp_path, example):
    """Every example's LaTeX parses in KaTeX (MathML output, no fonts needed)."""
    module = __import__(example)
    path = tmp_path / f"{example}.html"
    path.write_text(gb.to_html(module.build(), views=[]), encoding="utf-8")
    by = _open(browser, path, "equations")
    blocks = browser.find_elements(by.CSS_SELECTOR, "#equations .math math")
    assert len(blocks) == 2  # the forward and the backward schedule
    assert browser.find_elements(by.CSS_SELECTOR, ".katex-error") == []
    assert "vjp of" in browser.find_element("id", "equations").text
    # every \tag (the schedule step) is shown as the row's number, visibly
    tags = re.findall(r"\\tag\{([^}]*)\}", gb.to_latex(module.build()))
    cells = browser.find_elements(by.CSS_SELECTOR, "#equations mtd.mml-eqn-num")
    assert [c.text for c in cells] == [f"({t})" for t in tags]
    assert all(c.is_displayed() and c.size["width"] > 10 for c in cells)
    assert "(F0)" in browser.find_element("id", "equations").text
    if example == "mlp_digits":
        browser.save_screenshot(str(_artifacts() / "explorer-equations-katex.png"))
    assert _errors(browser) == []


@pytest.mark.parametrize("view", ["forward", "backward"])
def test_a_scan_body_folds_and_unfolds_in_place(browser, tmp_path, view):
    """The LSTM's loop body is a cluster: a click on its title folds it, another unfolds it;
    in the backward view it is the reverse scan's body."""
    import lstm_charlm

    path = tmp_path / "lstm.html"
    gb.render(lstm_charlm.build(), path, views=[view], equations=False)
    data = json.loads(re.search(r'<script type="application/json" id="gb-data">(.*?)</script>',
                                path.read_text(encoding="utf-8"), re.S).group(1).replace("<\\/", "</"))
    by = _open(browser, path, view)
    forward = _view(data, view)
    cid, body = next((c, info) for c, info in forward["clusters"].items() if info["kind"] == "body")
    assert body["label"] == "scan · body" and len(body["members"]) > 10
    assert "gb-collapsed" not in _classes(browser, cid)
    title = browser.find_element(by.CSS_SELECTOR, f'[id="{cid}"] > text')
    title.click()
    assert "gb-collapsed" in _classes(browser, cid)
    assert all("gb-hidden" in _classes(browser, s) for s in body["members"])
    browser.find_element(by.CSS_SELECTOR, f'[id="{cid}"] > text').click()
    assert "gb-collapsed" not in _classes(browser, cid)
    assert all("gb-hidden" not in _classes(browser, s) for s in body["members"])
    browser.find_element("id", body["members"][-1]).click()  # a body node has its row in the side panel
    assert "built at" in browser.find_element("id", "panel").text
    browser.save_screenshot(str(_artifacts() / f"explorer-scan-body-{view}.png"))
    assert _errors(browser) == []
