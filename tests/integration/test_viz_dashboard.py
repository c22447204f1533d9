"""``meshproxy viz dashboard`` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) loads the page against real proxies (web's proxy calls api,
meshed with mutual TLS, under test_viz's steady load: 20 requests per second, every tenth a 500) and
sees the right workloads and numbers, updated live; a workload's callers, callees and routes; and
tap events of requests sent after the page loaded. Screenshots are saved (paths printed)."""

from __future__ import annotations

import http.client
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.clients import clean_env
from helpers.meshproxy import REPO
from helpers.ports import free_port
from tests.integration.test_viz import SERVICE, mesh, prometheus  # noqa: F401  (fixtures: two proxies, Prometheus)

pytestmark = pytest.mark.timeout(180)

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


class Dashboard:
    """``meshproxy viz dashboard`` running; ``url`` once it printed it."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy", "viz", "dashboard", *args], cwd=REPO,
                                     env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.lines:
                if "http://" in line:
                    return line[line.index("http://"):]
            time.sleep(0.05)
        raise AssertionError(f"the dashboard printed no URL: {self.lines}, exit {self.proc.poll()}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        return err


@pytest.fixture
def browser():
    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh --test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _cells(driver, selector: str) -> list[list[str]]:
    """The rows' cell texts, read in one script (the page re-renders its tables at every update)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map("
                                 "(tr) => [...tr.cells].map((td) => td.innerText.trim()))", selector)


def _wait(driver, what: str, predicate, timeout: float = 30.0):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d) or None)
    except Exception:
        states = [driver.find_element(By.ID, i).text for i in ("status", "tap-state", "unreachable")]
        raise AssertionError(f"waited {timeout}s for {what}; the page says {states}, "
                             f"its console {driver.get_log('browser')}") from None


def _shot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def _percent(cell: str) -> float:
    assert cell.endswith("%"), cell
    return float(cell[:-1])


def _rps(cell: str) -> float:
    return float(cell[:-3]) if cell.endswith("rps") else 0.0


def _check_workloads(browser) -> None:
    """The workloads table: api answers web's load (90% success, ~20 rps, all over mutual TLS); the edge."""

    def api_row(driver):
        rows = {r[1]: r for r in _cells(driver, "#workloads tbody tr") if len(r) == 9}
        # Until a window's worth of samples exist (Prometheus's first scrapes), the rate reads low.
        return rows if "api" in rows and "web" in rows and _rps(rows["api"][4]) >= 12.0 else None

    rows = _wait(browser, "api's numbers in the workloads table", api_row, 45)
    ns, name, meshed, success, rps, p50, p95, p99, tls = rows["api"]
    assert (ns, meshed, tls) == ("default", "1/1", "100.00%"), rows["api"]
    assert 80.0 <= _percent(success) <= 97.0, rows["api"]
    assert _rps(rps) <= 26.0, rows["api"]
    assert all(v.endswith("ms") for v in (p50, p95, p99)), rows["api"]
    assert rows["web"][2] == "1/1" and rows["web"][4] == "-", rows["web"]  # meshed, nobody calls it
    edges = _wait(browser, "the edges", lambda d: _cells(d, "#edges tbody tr"))
    assert any(e[0] == "web" and e[1] == "api" and e[-1] == "\u221a" for e in edges), edges


def test_dashboard_in_chromium(mesh, browser, tmp_path_factory):  # noqa: F811  (the imported fixture)
    from selenium.webdriver.common.by import By

    a, b, endpoints, _ = mesh
    shots = tmp_path_factory.mktemp("dashboard-screenshots")
    port = free_port()
    board = Dashboard("--endpoints", str(endpoints), "--proxy", f"127.0.0.1:{a.admin[1]}", "--tap", a.tap_hostport,
                      "--tap", b.tap_hostport, "--address", f"127.0.0.1:{port}", "--interval", "1s")
    try:
        url = board.url()
        assert url == f"http://127.0.0.1:{port}/"
        browser.get(url)

        _check_workloads(browser)
        # Live without reloading: the header's update time moves on.
        first = browser.find_element(By.ID, "status").text
        _wait(browser, "a live update", lambda d: d.find_element(By.ID, "status").text != first, 10)
        _wait(browser, "the charts", lambda d: len(d.find_elements(By.CSS_SELECTOR, ".uplot")) >= 2, 10)
        _shot(browser, shots / "overview.png")

        # api's page: web calls it over mutual TLS; web's page: its route to api.
        browser.find_element(By.LINK_TEXT, "api").click()
        callers = _wait(browser, "api's callers", lambda d: _cells(d, "#callers tbody tr"))
        assert callers[0][0] == "web" and callers[0][-1] == "\u221a" and "web.default" in callers[0][2], callers
        _wait(browser, "api's latency chart", lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-latency .uplot"))
        _shot(browser, shots / "workload-api.png")
        browser.get(url + "#/workload/default/web")
        callees = _wait(browser, "web's callees", lambda d: _cells(d, "#callees tbody tr"))
        assert callees[0][0] == "api" and callees[0][-1] == "\u221a", callees
        routes = _wait(browser, "web's routes", lambda d: _cells(d, "#routes tbody tr"))
        assert any(r[0] == "ok" and r[1] == "api" and r[2] == "100.00%" for r in routes), routes

        # Tap: requests sent after the page is up appear as they happen (the load's paths filtered out).
        browser.get(url + "#/tap?path=/tapped")
        _wait(browser, "the tap to start", lambda d: d.find_element(By.ID, "tap-state").text.startswith("tapping"))
        time.sleep(0.5)  # the Observe calls reach the proxies
        assert _cells(browser, "#tap tbody tr") == []
        conn = http.client.HTTPConnection(*a.outbound, timeout=10)
        for i in range(3):
            conn.request("GET", f"/tapped/{i}", headers={"Host": SERVICE})
            conn.getresponse().read()
        conn.close()

        def tapped(driver):
            rows = _cells(driver, "#tap tbody tr")
            paths = {r[8] for r in rows if r[1] == "req"}
            return rows if {f"/tapped/{i}" for i in range(3)} <= paths else None

        rows = _wait(browser, "the tapped requests", tapped, 15)
        # Each request through both proxies: web's outbound and api's inbound, each req, rsp, end.
        assert {r[2] for r in rows} == {"out", "in"}, rows
        assert {r[1] for r in rows} == {"req", "rsp", "end"}, rows
        assert all(r[5] == "true" for r in rows if r[2] == "out"), rows  # mutual TLS to api
        _shot(browser, shots / "tap.png")
    finally:
        err = board.stop()
    assert "Traceback" not in err, err


def test_dashboard_over_prometheus_in_chromium(mesh, prometheus, browser, tmp_path_factory):  # noqa: F811
    """The same page with a real Prometheus (Debian's, scraping both proxies) as its source: the same
    workloads and numbers, a workload's callers, and the routes, computed by Linkerd's PromQL."""
    a, b, _, _ = mesh
    shots = tmp_path_factory.mktemp("dashboard-prometheus-screenshots")
    port = free_port()
    board = Dashboard("--prometheus", prometheus, "--address", f"127.0.0.1:{port}", "--interval", "1s",
                      "--time-window", "15s")
    try:
        browser.get(board.url())
        _check_workloads(browser)
        _shot(browser, shots / "overview.png")
        browser.get(board.url() + "#/workload/default/api")
        callers = _wait(browser, "api's callers", lambda d: _cells(d, "#callers tbody tr"))
        assert callers[0][0] == "web" and callers[0][-1] == "\u221a" and "web.default" in callers[0][2], callers
        browser.get(board.url() + "#/workload/default/web")
        routes = _wait(browser, "web's routes", lambda d: _cells(d, "#routes tbody tr"))
        assert any(r[1] == "api" for r in routes), routes
        _shot(browser, shots / "workload-web.png")
    finally:
        err = board.stop()
    assert "Traceback" not in err, err
