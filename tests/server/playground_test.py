#!/usr/bin/python3
"""The playground page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by python3-selenium) opens the page a taskmoe-server serves with
--playground, picks a task, types, clicks Translate, and reads what the page shows. The
translation must equal the HTTP API's for the same text, the page must have received it token
by token (it reports the time to the first token), and a refused request must show the
server's error. A screenshot of the page goes to --screenshot.

Run by ctest (tests/server/CMakeLists.txt):
  playground_test.py --server BIN --extract BIN --checkpoint DIR --screenshot PNG
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

ARGS = None
TEXT = "Open the file. Save the document as PDF."


def wait_for_port_file(path, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        if os.path.exists(path):
            ports = dict(line.split("=", 1) for line in open(path).read().split())
            if "http_port" in ports:
                return int(ports["http_port"])
        time.sleep(0.1)
    raise RuntimeError("the server did not write its port file")


def http_json(port, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.load(reply)


class PlaygroundTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="playground-test-")
        repository = os.path.join(cls.dir, "repository")
        subprocess.run([ARGS.extract, f"--checkpoint={ARGS.checkpoint}", f"--out={repository}",
                        "--tasks=en-de,en-fr"], check=True, stdout=subprocess.DEVNULL)
        port_file = os.path.join(cls.dir, "ports")
        cls.log = open(os.path.join(cls.dir, "server.log"), "w")
        cls.server = subprocess.Popen(
            [ARGS.server, f"--model_repository={repository}", "--host=127.0.0.1", "--port=0",
             "--metrics_port=-1", "--http_host=127.0.0.1", "--http_port=0", "--playground",
             "--threads=1", f"--port_file={port_file}"], stdout=cls.log, stderr=cls.log)
        cls.port = wait_for_port_file(port_file, cls.server)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if http_json(cls.port, "/readyz")["status"] == "SERVING":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        # Headless, and nothing that reaches for the network: this machine has none.
        for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1000,800",
                     f"--user-data-dir={os.path.join(cls.dir, 'chromium')}"]:
            options.add_argument(flag)
        cls.browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        cls.browser.set_page_load_timeout(60)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.server.terminate()
        cls.server.wait(timeout=60)
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def open_page(self):
        self.browser.get(f"http://127.0.0.1:{self.port}/")
        wait = WebDriverWait(self.browser, 30)
        wait.until(lambda b: b.find_element(By.ID, "task").is_enabled())
        return wait

    def translate(self, task, text):
        wait = self.open_page()
        Select(self.browser.find_element(By.ID, "task")).select_by_value(task)
        source = self.browser.find_element(By.ID, "source")
        source.clear()
        if text:
            source.send_keys(text)
        self.browser.find_element(By.ID, "translate").click()
        status = self.browser.find_element(By.ID, "status")
        wait.until(lambda b: status.text.startswith("done in") or "error" in
                   status.get_attribute("class"))
        return self.browser.find_element(By.ID, "output").text, status

    def test_lists_the_tasks(self):
        self.open_page()
        options = Select(self.browser.find_element(By.ID, "task")).options
        self.assertEqual([o.get_attribute("value") for o in options], ["en-de", "en-fr"])

    def test_typed_text_is_translated_as_the_api_translates_it(self):
        output, status = self.translate("en-fr", TEXT)
        expected = http_json(self.port, "/v1/translate",
                             {"task": "en-fr", "texts": [TEXT]})["translations"][0]["text"]
        self.assertEqual(output, expected)
        self.assertTrue(output)
        # Streamed: the page timed the first of several token messages.
        self.assertIn("first token after", status.text)
        self.browser.save_screenshot(ARGS.screenshot)

    def test_a_refused_request_shows_the_servers_error(self):
        output, status = self.translate("en-de", "")
        self.assertIn("error", status.get_attribute("class"))
        self.assertIn("INVALID_ARGUMENT", status.text)
        self.assertIn("text", status.text)
        self.assertEqual(output, "")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--extract", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--screenshot", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
