"""The web UI in a real browser: Debian's Chromium through Selenium, headless, on 127.0.0.1,
against a real ``faaso serve`` with the real engine and real containers.

The tests run in file order and share one server and one browser (the functions deployed by one
test are scaled by the next). They also take the screenshots in docs/ui/ (1280x800 and a phone's
390x844), which the README shows.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from faaso.api.auth import password_path
from tests.helpers import ROOT, Served, start_serve, stop_serve, wait_ready

pytestmark = [
    pytest.mark.docker,
    pytest.mark.usefixtures("require_docker"),
    pytest.mark.timeout(600),
]

SHOTS = ROOT / "docs" / "ui"
DESKTOP = (1280, 800)
PHONE = (390, 844)
WAIT = 120.0  # seconds: a deploy builds or starts a container on a shared, loaded machine

HELLO = """\
def handle(event, context):
    text = event.body.decode() or "nobody"
    print(f"hello was called with {text}", flush=True)
    return {"statusCode": 200, "body": f"hello {text}"}
"""

FLAKY = """\
def handle(event, context):
    return {"statusCode": 500, "body": "always broken"}
"""

SLOW = """\
import time


def handle(event, context):
    time.sleep(float(event.body.decode() or "0"))  # the function's own work: as long as asked
    return {"statusCode": 200, "body": "slept"}
"""


@dataclass
class Ui:
    served: Served
    driver: WebDriver
    password: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    def url(self, path: str, password: str | None = None) -> str:
        return f"http://admin:{password or self.password}@127.0.0.1:{self.served.port}{path}"

    def goto(self, path: str, password: str | None = None) -> None:
        """Open a page. Chromium aborts a load with ERR_NETWORK_CHANGED when a network
        interface comes or goes, and every container Docker starts adds one: such a load is
        tried again (until a deadline: on a shared machine other tests start containers every few
        seconds), anything else is what the test sees."""
        end = time.monotonic() + WAIT
        while True:
            self.driver.get(self.url(path, password))
            shown = time.monotonic() + 10.0
            while time.monotonic() < shown:
                if self.driver.find_elements(By.ID, "main"):
                    return  # one of faaso's pages
                text = self.driver.execute_script("return document.body.innerText")
                if "ERR_NETWORK_CHANGED" in text:
                    break
                time.sleep(0.2)  # poll with a deadline
            if time.monotonic() > end:
                return  # what the test sees and reports
            time.sleep(0.5)  # poll with a deadline: until the interfaces settle

    def follow(self, by: str, value: str) -> None:
        """Follow a link: its page opened with :meth:`goto` (a click's navigation aborted by
        ERR_NETWORK_CHANGED would not be tried again)."""
        href = str(self.driver.find_element(by, value).get_attribute("href"))
        parts = urlsplit(href)
        self.goto(parts.path + (f"?{parts.query}" if parts.query else ""))

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        token = base64.b64encode(f"admin:{self.password}".encode()).decode()
        raw = json.dumps(body).encode() if body is not None else None
        status, _, out = self.served.request(method, path, raw, {"Authorization": f"Basic {token}"})
        return status, json.loads(out) if out else None

    def wait(self, check: Callable[[WebDriver], Any], what: str, timeout: float = WAIT) -> Any:
        waiter = WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.2,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        try:
            return waiter.until(check)
        except TimeoutException:
            page = self.driver.execute_script("return document.body.innerText")[:3000]
            pytest.fail(f"no {what} within {timeout} s; the page was:\n{page}")

    def submit(self, button: str, result: str, expect: str, confirm: bool = False) -> None:
        """Press the button (a CSS selector) of an htmx form and wait for ``expect`` in the
        element ``result`` (an id). A request the browser aborted (ERR_NETWORK_CHANGED: another
        container came up) shows the UI's network error there: it is sent again, a few times.
        The forms sent this way are idempotent (scale to N, back to automatic, cancel, replay
        show their outcome either way)."""
        for _ in range(5):
            # Found and pressed in one go: a live list re-renders its rows every 2 s.
            def press(d: WebDriver) -> bool:
                d.find_element(By.CSS_SELECTOR, button).click()
                return True

            self.wait(press, button)
            if confirm:
                self.wait(EC.alert_is_present(), "the confirmation").accept()
            shown = self.answer(result)
            if expect in shown:
                return
            assert "network error" in shown, shown
        pytest.fail(f"the form behind {button} got no answer five times (network errors)")

    def answer(self, result: str) -> str:
        """The text htmx (or the UI's network error) puts into the element ``result``, emptied
        for the next answer."""
        shown = str(self.wait(lambda d: d.find_element(By.ID, result).text, f"#{result} filled"))
        empty = "document.getElementById(arguments[0]).replaceChildren()"
        self.driver.execute_script(empty, result)
        return shown

    def text_of(self, css: str) -> str:
        return str(self.driver.find_element(By.CSS_SELECTOR, css).text)

    def shot(self, name: str, at: str | None = None) -> None:
        """The page as a user sees it, at desktop and at phone size: from its top, or from the
        element ``at`` (a CSS selector)."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
            self.driver.set_window_rect(width=width, height=height)
            self.wait(lambda d: d.execute_script("return window.innerWidth") > 0, "a resize")
            if at is None:
                self.driver.execute_script("window.scrollTo(0, 0)")
            else:
                self.driver.execute_script(
                    "document.querySelector(arguments[0]).scrollIntoView()", at
                )
            self.driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
        self.driver.set_window_rect(width=DESKTOP[0], height=DESKTOP[1])


def _config(tmp: Path) -> Path:
    hello = tmp / "hello"
    hello.mkdir()
    (hello / "handler.py").write_text(HELLO)
    for name, code in (("flaky", FLAKY), ("slow", SLOW)):
        (tmp / name).mkdir()
        (tmp / name / "handler.py").write_text(code)
    one_attempt = "annotations: {com.openfaas.retry.attempts: '1'}"
    routes = tmp / "routes.yml"
    routes.write_text(
        "functions:\n"
        f"  sum: {{source: {ROOT / 'conf/functions/sum'}, runtime: python}}\n"
        f"  mul: {{source: {ROOT / 'conf/functions/mul'}, runtime: python}}\n"
        f"  hello: {{source: {hello}, runtime: python}}\n"
        # Always 500, one attempt: each job is a dead letter at once.
        f"  flaky: {{source: {tmp / 'flaky'}, runtime: python, {one_attempt}}}\n"
        # One job at a time: a long one keeps the next queued.
        f"  slow: {{source: {tmp / 'slow'}, runtime: python, async_concurrency: 1,"
        f" timeout: 150, {one_attempt}}}\n"
        # Idle for 3 s: the autoscaler takes it to zero (a decision; the phase paused).
        f"  nap: {{source: {hello}, runtime: python, scale: {{zero: true, zero_duration: 3}}}}\n"
        # Scaled by hand in the tests: the autoscaler holds a hand scale for one stable window
        # (60 s by default); ten minutes keep the count the test set until it looks.
        f"  manual: {{source: {hello}, runtime: python, scale: {{stable_window: 600}}}}\n"
        f"store: {ROOT / 'conf/store.json'}\n"
        "routes:\n  /sum: sum\n  /mul: mul\n"
    )
    return routes


def _browser() -> WebDriver:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail("chromium and chromium-driver are not installed: run scripts/prepare")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--hide-scrollbars",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    tmp = tmp_path_factory.mktemp("ui")
    served = start_serve(_config(tmp), tmp / "state", tmp / "faaso.log")
    driver: WebDriver | None = None
    try:
        wait_ready(served, 900.0)
        password = password_path(tmp / "state").read_text().strip()
        driver = _browser()
        driver.set_page_load_timeout(60)
        yield Ui(served, driver, password)
    finally:
        if driver is not None:
            driver.quit()
        assert stop_serve(served) == 0, served.log_text()[-4000:]


def _phase(ui: Ui, name: str) -> str:
    return str(ui.driver.find_element(By.CSS_SELECTOR, f'tr[data-function="{name}"] .phase').text)


FETCH = """
const [path, auth, done] = arguments;
fetch(path, {headers: auth ? {Authorization: "Basic " + btoa(auth)} : {}, credentials: "omit"})
  .then(async (r) => done([r.status, r.headers.get("WWW-Authenticate"), await r.text()]))
  .catch((e) => done([0, null, String(e)]));
"""


def test_a_wrong_password_is_refused(ui: Ui) -> None:
    ui.driver.get(ui.url("/ui/", password="not-the-password"))
    assert "function-rows" not in ui.driver.page_source  # no UI, only the browser's prompt
    ui.driver.get(ui.base + "/healthz")  # an open page of the same origin, to fetch from
    for auth in ("admin:not-the-password", "root:" + ui.password, None):
        status, challenge, text = ui.driver.execute_async_script(FETCH, "/ui/", auth)
        assert status == 401, (auth, status, text)
        assert challenge == 'Basic realm="faaso"' and "authentication required" in text
    status, _, text = ui.driver.execute_async_script(FETCH, "/ui/", "admin:" + ui.password)
    assert status == 200 and "function-rows" in text


def test_log_in_and_the_list_shows_sum_and_mul_ready(ui: Ui) -> None:
    ui.goto("/")  # / redirects to /ui/
    ui.wait(lambda d: d.current_url.endswith("/ui/"), "the redirect to /ui/")
    for name in ("sum", "mul"):

        def ready(_d: WebDriver, name: str = name) -> bool:
            return _phase(ui, name) == "ready"

        ui.wait(ready, f"{name} shown as ready")
    row = ui.text_of('tr[data-function="sum"]')
    assert "1/1" in row and "/sum" in row and "faaso/sum:" in row
    # Live: an invocation made elsewhere shows up without a reload.
    assert ui.served.request("GET", "/sum?a=1&b=1")[2] == b"2"
    ui.wait(
        lambda _d: ui.text_of('tr[data-function="sum"] td[data-label="Invocations"]') == "1",
        "the invocation counted live",
        timeout=30,
    )
    ui.shot("functions")


def _send(ui: Ui, form: Any) -> None:
    """Send the invoke form and wait for its answer; again when the browser aborted the call
    (ERR_NETWORK_CHANGED: "The call failed: TypeError: Failed to fetch")."""
    for _ in range(5):
        form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        ui.wait(
            lambda d: d.find_elements(
                By.CSS_SELECTOR, "#invoke-result .result, #invoke-result .err"
            ),
            "the invocation's answer",
        )
        if "The call failed" not in ui.text_of("#invoke-result"):
            return


def _invoke(ui: Ui, name: str, body: str, mode: str = "json") -> str:
    ui.goto(f"/ui/function/{name}")
    form = ui.driver.find_element(By.ID, "invoke")
    form.find_element(By.CSS_SELECTOR, f'input[name="mode"][value="{mode}"]').click()
    area = form.find_element(By.NAME, "body")
    area.clear()
    area.send_keys(body)
    _send(ui, form)
    assert not ui.driver.find_elements(By.CSS_SELECTOR, "#invoke-result .err"), ui.text_of(
        "#invoke-result"
    )
    return ui.text_of("#invoke-body")


def test_invoke_sum_with_a_json_body_shows_5(ui: Ui) -> None:
    assert _invoke(ui, "sum", "[2, 3]") == "5"
    assert ui.text_of("#invoke-status").startswith("200")
    assert "warm" in ui.text_of("#invoke-result")
    ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#logs .log"), "the first log lines")
    ui.shot("function")
    ui.shot("function-invoke", at="#invoke-h")


def test_an_invocations_log_line_appears_in_the_live_logs(ui: Ui) -> None:
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    assert _invoke(ui, "hello", marker, mode="text") == f"hello {marker}"
    ui.wait(
        lambda d: f"hello was called with {marker}" in d.find_element(By.ID, "logs").text,
        "the function's log line in the live logs",
        timeout=30,
    )


def _sum_image(ui: Ui) -> str:
    status, doc = ui.api("GET", "/system/function/sum")
    assert status == 200
    return str(doc["image"])


def test_deploy_from_the_form_and_see_it_ready(ui: Ui) -> None:
    assert ui.api("POST", "/system/secrets", {"name": "ui-used", "value": "v"})[0] == 200
    ui.goto("/ui/deploy")
    form = ui.driver.find_element(By.ID, "deploy-image")
    form.find_element(By.NAME, "name").send_keys("sum-copy")
    form.find_element(By.NAME, "image").send_keys(_sum_image(ui))
    form.find_element(By.NAME, "env").send_keys("GREETING=hi")
    form.find_element(By.NAME, "secrets").send_keys("ui-used")
    form.find_element(By.NAME, "memory").send_keys("128Mi")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    ui.wait(lambda d: "sum-copy" in d.find_element(By.ID, "deploy-image-result").text, "deployed")
    ui.follow(By.LINK_TEXT, "sum-copy")
    ui.wait(lambda d: d.find_element(By.ID, "phase").text == "ready", "sum-copy ready")
    assert "GREETING=hi" in ui.text_of("#config") and "128 MiB" in ui.text_of("#config")
    assert ui.served.request("POST", "/function/sum-copy", b"[4, 5]")[2] == b"9"


def test_deploy_from_the_store_and_see_it_ready(ui: Ui) -> None:
    ui.goto("/ui/deploy")
    entry = ui.wait(lambda d: d.find_element(By.CSS_SELECTOR, '[data-entry="sum"]'), "the store")
    name = entry.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("sum-store")
    ui.shot("deploy")
    ui.shot("deploy-store", at="#store-h")
    entry.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    ui.wait(lambda d: "sum-store" in d.find_element(By.ID, "store-result").text, "deployed")
    ui.goto("/ui/")
    ui.wait(lambda _d: _phase(ui, "sum-store") == "ready", "sum-store ready in the list")
    assert ui.served.request("GET", "/function/sum-store?a=2&b=2")[2] == b"4"


def test_deploy_a_pasted_stack_file_then_remove_it(ui: Ui) -> None:
    ui.goto("/ui/deploy")
    stack = ui.driver.find_element(By.CSS_SELECTOR, '#deploy-stack textarea[name="stack"]')
    text = f"functions:\n  sum-stack:\n    image: {_sum_image(ui)}\n    labels: {{team: ui}}\n"
    stack.send_keys(text)
    ui.driver.find_element(By.CSS_SELECTOR, '#deploy-stack button[type="submit"]').click()
    ui.wait(lambda d: "sum-stack" in d.find_element(By.ID, "deploy-stack-result").text, "deployed")
    assert ui.served.request("GET", "/function/sum-stack?a=5&b=5")[2] == b"10"
    # A bad one says what is wrong, and deploys nothing.
    stack.clear()
    stack.send_keys("functions:\n  nope:\n    lang: python3\n")
    ui.driver.find_element(By.CSS_SELECTOR, '#deploy-stack button[type="submit"]').click()
    ui.wait(
        lambda d: "give an image" in d.find_element(By.ID, "deploy-stack-result").text,
        "the error",
    )
    ui.goto("/ui/function/sum-stack")
    assert "team=ui" in ui.text_of("#config")
    ui.driver.find_element(By.CSS_SELECTOR, "form[hx-post$='/remove'] button").click()
    ui.driver.switch_to.alert.accept()
    ui.wait(lambda d: d.current_url.endswith("/ui/"), "back on the list")
    assert ui.api("GET", "/system/function/sum-stack")[0] == 404
    assert ui.api("GET", "/system/function/nope")[0] == 404


def _scale_by_keyboard(ui: Ui, replicas: int) -> None:
    """Type the count and press Enter (the keyboard submits the form), again if the browser
    aborted the request (the UI's network error)."""
    for _ in range(5):
        field = ui.driver.find_element(By.CSS_SELECTOR, 'input[name="replicas"]')
        field.clear()
        field.send_keys(str(replicas), Keys.ENTER)
        text = ui.answer("scale-result")
        if f"scaled to {replicas}" in text:
            return
        assert "network error" in text, text
    pytest.fail("the scale form got no answer five times (network errors)")


def test_scale_to_2_and_see_2_replicas(ui: Ui) -> None:
    ui.goto("/ui/function/manual")
    _scale_by_keyboard(ui, 2)
    ui.wait(lambda d: d.find_element(By.ID, "replicas").text == "2/2", "2 of 2 replicas, live")
    status, doc = ui.api("GET", "/system/function/manual")
    assert status == 200 and doc["availableReplicas"] == 2


def test_create_and_delete_a_secret_and_its_value_never_reaches_the_browser(ui: Ui) -> None:
    # A secret in use, of this test's own (it does not lean on another test's deployments).
    assert ui.api("POST", "/system/secrets", {"name": "ui-held", "value": "v"})[0] == 200
    deploy = {"service": "holder", "image": _sum_image(ui), "secrets": ["ui-held"]}
    assert ui.api("POST", "/system/functions", deploy)[0] == 202
    value = f"value-{uuid.uuid4().hex}"
    ui.goto("/ui/secrets")
    # With the keyboard only: tab to the name field, type, tab to the value, Enter.
    body = ui.driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(20):
        active = ui.driver.switch_to.active_element
        if active.get_attribute("name") == "name":
            break
        active.send_keys(Keys.TAB)
    else:
        pytest.fail("the secret's name field cannot be reached with Tab")
    active.send_keys("ui-made")
    active.send_keys(Keys.TAB)
    ui.driver.switch_to.active_element.send_keys(value, Keys.ENTER)
    ui.wait(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-secret="ui-made"]'), "the new row")
    assert value not in ui.driver.page_source
    ui.goto("/ui/secrets")
    assert value not in ui.driver.page_source
    assert {"name": "ui-made", "namespace": "openfaas-fn"} in ui.api("GET", "/system/secrets")[1]
    ui.shot("secrets")
    # One in use: the 409 says by whom, and it stays.
    ui.driver.find_element(By.CSS_SELECTOR, '[data-secret="ui-held"] button.danger').click()
    ui.driver.switch_to.alert.accept()
    ui.wait(lambda d: "used by holder" in d.find_element(By.ID, "secret-msg").text, "the 409")
    assert ui.driver.find_elements(By.CSS_SELECTOR, '[data-secret="ui-held"]')
    # One not in use goes.
    ui.driver.find_element(By.CSS_SELECTOR, '[data-secret="ui-made"] button.danger').click()
    ui.driver.switch_to.alert.accept()
    ui.wait(
        lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-secret="ui-made"]'), "row removed"
    )
    names = [s["name"] for s in ui.api("GET", "/system/secrets")[1]]
    assert "ui-made" not in names and "ui-held" in names
    assert ui.api("DELETE", "/system/functions", {"functionName": "holder"})[0] == 202


def _create_secret_with_script(ui: Ui, script: str, name: str) -> None:
    """The secrets page's create form, sent after ``script`` changed its CSRF token: a 403."""
    ui.goto("/ui/secrets")
    ui.driver.execute_script(script)
    form = ui.driver.find_element(By.ID, "secret-create")
    form.find_element(By.NAME, "name").send_keys(name)
    form.find_element(By.NAME, "value").send_keys("x")
    form.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
    ui.wait(lambda d: "no valid CSRF token" in d.find_element(By.ID, "secrets").text, "the 403")
    assert name not in [s["name"] for s in ui.api("GET", "/system/secrets")[1]]


def test_a_form_without_the_csrf_token_is_refused(ui: Ui) -> None:
    _create_secret_with_script(
        ui,
        "document.body.removeAttribute('hx-headers');"
        "document.querySelector('#secret-create input[name=csrf_token]').remove();",
        "no-token",
    )
    # A wrong token is refused as well.
    _create_secret_with_script(
        ui,
        "document.body.setAttribute('hx-headers', JSON.stringify({'X-CSRF-Token': 'forged'}));"
        "document.querySelector('#secret-create input[name=csrf_token]').value = 'forged';",
        "forged-token",
    )


def test_the_system_page(ui: Ui) -> None:
    ui.goto("/ui/system")
    text = ui.text_of("main")
    assert "docker" in text and "0.1.0" in text and "store.json" in text
    ui.shot("system")


def _enqueue(ui: Ui, name: str, body: bytes) -> str:
    status, headers, out = ui.served.request("POST", f"/async-function/{name}", body)
    assert status == 202, out
    return headers["x-call-id"]


def _job(ui: Ui, call_id: str) -> dict[str, Any]:
    status, doc = ui.api("GET", f"/system/async/{call_id}")
    assert status == 200, doc
    return dict(doc)


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.2)  # poll with a deadline


def test_an_async_invoke_from_the_ui_appears_on_the_jobs_page_and_succeeds(ui: Ui) -> None:
    ui.goto("/ui/function/sum")
    form = ui.driver.find_element(By.ID, "invoke")
    form.find_element(By.CSS_SELECTOR, 'input[name="call"][value="async"]').click()
    form.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="json"]').click()
    area = form.find_element(By.NAME, "body")
    area.clear()
    area.send_keys("[2, 3]")
    _send(ui, form)
    link = ui.wait(lambda d: d.find_element(By.ID, "invoke-call-id"), "the call id")
    call_id = str(link.text)
    assert call_id and "Queued as call" in ui.text_of("#invoke-result")
    ui.goto("/ui/async?function=sum")
    row = f'tr[data-job="{call_id}"]'
    ui.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, row).get_attribute("data-state") == "succeeded",
        "the job listed as succeeded (live)",
    )
    ui.shot("async")
    ui.follow(By.CSS_SELECTOR, f"{row} th a")
    ui.wait(lambda d: d.find_element(By.ID, "job-state").text == "succeeded", "the job's page")
    assert ui.text_of("#job-response") == "5"
    assert ui.text_of("#job-attempts") == "1" and ui.text_of("#job-status") == "200"
    assert _job(ui, call_id)["response"]["body"] == "5"
    ui.shot("async-job")


def test_a_dead_letter_is_replayed_from_the_ui(ui: Ui) -> None:
    call_id = _enqueue(ui, "flaky", b"x")
    _until(lambda: _job(ui, call_id)["state"] == "dead", "dead letter")
    first_end = _job(ui, call_id)["finishedAt"]
    ui.goto("/ui/async?state=dead")
    row = ui.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-job="{call_id}"]'), "the dead letter"
    )
    assert "dead letter" in row.text and "500" in row.text
    ui.submit(f'tr[data-job="{call_id}"] button', "job-msg", "queued again")
    # It ran again (and, still broken, is a dead letter again, with a later end).
    _until(
        lambda: (j := _job(ui, call_id))["state"] == "dead" and j["finishedAt"] != first_end,
        "the replayed run",
    )
    # Replaying what is not a dead letter is refused, and says why.
    ui.goto(f"/ui/async/job/{call_id}")
    ui.wait(lambda d: d.find_element(By.ID, "job-state").text == "dead letter", "its page")
    assert "always broken" in ui.text_of("#job-response")
    ui.shot("async-dead")


def test_a_queued_job_is_cancelled_from_the_ui(ui: Ui) -> None:
    # Under its 150 s timeout; long enough for the page loads that a changing network aborts
    # (the job is still running when the module's server stops: it is released then).
    busy = _enqueue(ui, "slow", b"120")
    _until(lambda: _job(ui, busy)["state"] == "running", "the first job running")
    waiting = _enqueue(ui, "slow", b"0")
    assert _job(ui, waiting)["state"] == "queued"  # async_concurrency 1: it waits
    ui.goto(f"/ui/async/job/{waiting}")
    ui.wait(lambda d: d.find_element(By.ID, "job-state").text == "queued", "the queued job")
    ui.submit("#job button.danger", "job-msg", "cancelled", confirm=True)
    assert _job(ui, waiting)["state"] == "cancelled"
    ui.wait(lambda d: d.find_element(By.ID, "job-state").text == "cancelled", "shown live")
    # The running one offers no cancel (only a queued job can be cancelled).
    ui.goto(f"/ui/async/job/{busy}")
    ui.wait(lambda d: d.find_element(By.ID, "job-state").text == "running", "the running job")
    assert not ui.driver.find_elements(By.CSS_SELECTOR, "#job button")


def test_scale_to_2_then_back_to_automatic(ui: Ui) -> None:
    # Still 2, set by hand (its stable window of 600 s holds it): back to automatic is 1.
    ui.goto("/ui/function/manual")
    ui.wait(lambda d: d.find_element(By.ID, "replicas").text == "2/2", "2 of 2 replicas")
    assert ui.driver.find_element(By.ID, "scale-mode").get_attribute("data-mode") == "override"
    ui.submit("#scale-reset button", "scale-result", "back to automatic")
    ui.wait(lambda d: d.find_element(By.ID, "replicas").text == "1/1", "1 of 1 replica, live")
    ui.wait(
        lambda d: d.find_element(By.ID, "scale-mode").get_attribute("data-mode") == "automatic",
        "automatic",
    )
    status, doc = ui.api("GET", "/system/function/manual")
    assert status == 200 and doc["replicas"] == 1
    assert "1 / 20" in ui.text_of("#scale-policy")  # the default min / max
    assert "stable 600 s" in ui.text_of("#scale-policy")


def _browser_connections(port: int) -> int:
    """TCP connections the browser holds to faaso (``ss``: Debian's iproute2)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"dport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if "chrom" in line)


def test_pages_left_keep_no_event_stream_open(ui: Ui) -> None:
    # Each of these pages has one or two live event streams. A page left for another must
    # close them: Chromium keeps left pages in its back/forward cache, and over HTTP/1.1 it
    # opens at most six connections to one server, so held streams made the next page load
    # wait about a minute.
    for path in ("/ui/function/sum", "/ui/async", "/ui/function/mul", "/ui/function/hello", "/ui/"):
        ui.goto(path)
    # The list page's one stream and a kept-alive connection at most (closes are asynchronous).
    _until(lambda: _browser_connections(ui.served.port) <= 2, "streams of left pages closed", 15)


def test_the_autoscaler_decision_list_shows_a_decision(ui: Ui) -> None:
    ui.goto("/ui/function/nap")
    ui.wait(
        lambda d: "scale to zero" in d.find_element(By.CSS_SELECTOR, "#decisions").text,
        "the scale-to-zero decision in the list (live)",
    )
    assert "idle for" in ui.text_of("#decisions tr.decision")
    assert ui.text_of('#decisions tr.decision td[data-label="From"]') == "1"
    assert ui.text_of('#decisions tr.decision td[data-label="To"]') == "0"
    # A call wakes it; idle again for 3 s, it goes back to zero: a second decision, on the
    # charts' recent end (the first one was at start-up, minutes ago).
    assert ui.served.request("GET", "/function/nap")[0] == 200

    def to_zero_twice(d: WebDriver) -> bool:
        rows = d.find_elements(By.CSS_SELECTOR, "#decisions tr.decision")
        return sum("scale to zero" in r.text for r in rows) >= 2

    ui.wait(to_zero_twice, "a second scale to zero after the wake (live)")

    def marked_recently(d: WebDriver) -> bool:
        # The charts catch up (a sample every 2 s): the new decision's mark in the right half.
        chart = d.find_element(By.CSS_SELECTOR, "#live svg.lines")
        marks = chart.find_elements(By.CSS_SELECTOR, ".mark")
        xs = [float(m.get_dom_attribute("x1") or 0) for m in marks]
        return max(xs, default=0.0) > float(chart.get_dom_attribute("width") or 0) / 2

    ui.wait(marked_recently, "the second decision marked on the replicas chart")
    ui.wait(
        lambda d: d.find_element(By.ID, "phase").get_attribute("data-phase") == "paused", "paused"
    )
    ui.shot("function-scaling", at="#as-h")
    ui.goto("/ui/")
    ui.wait(lambda _d: _phase(ui, "nap") == "paused", "nap shown as paused in the list")
    ui.shot("functions")
