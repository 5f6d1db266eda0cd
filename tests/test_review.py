"""Review inboxes without a browser: results wait in the review area across a restart, `anond web`
run as a process of its own decides for the service (reject -> failed/ with reason rejected),
unreviewed results expire with their originals, and the [web] login rules."""

from __future__ import annotations

import http.cookiejar
import json
import re
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from service_harness import Anond, clean_env, face_jpeg, wait_for, write_config


def _config(tmp, models_dir, **service):
    inbox, outbox, failed, state = (tmp / n for n in ("inbox", "outbox", "failed", "state"))
    config = write_config(
        tmp / "anond.toml", models_dir=models_dir,
        service={"state_dir": str(state), "failed_dir": str(failed), "stable_after_s": 0.3, **service},
        inboxes=[{"path": str(inbox), "outbox": str(outbox), "review": True}],
        sections={"web": {"port": 0}})
    return config, inbox, outbox, failed, state


def _state(state, job):
    con = sqlite3.connect(f"file:{state / 'jobs.sqlite3'}?mode=ro", uri=True)
    try:
        return con.execute("SELECT state, error FROM jobs WHERE id=?", (job,)).fetchone()
    finally:
        con.close()


class Browserless:
    """A logged-in HTTP client of the UI (cookies kept, the page's CSRF token sent)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = self.opener.open(self._req("/login", accept="text/html")).read().decode()
        csrf = re.search(r'name="csrf" content="([^"]+)"', login).group(1)
        self.post("/api/login", {"secret": token}, csrf=csrf)
        page = self.opener.open(self._req("/", accept="text/html")).read().decode()
        self.csrf = re.search(r'name="csrf" content="([^"]+)"', page).group(1)

    def _req(self, path, data=None, csrf=None, accept="application/json"):
        headers = {"Accept": accept, "Content-Type": "application/json"}
        if csrf:
            headers["X-CSRF-Token"] = csrf
        body = None if data is None else json.dumps(data).encode()
        return urllib.request.Request(self.url + path, data=body, headers=headers,
                                      method="POST" if body is not None or csrf else "GET")

    def get(self, path):
        return json.loads(self.opener.open(self._req(path), timeout=30).read())

    def post(self, path, data=None, csrf=None):
        req = self._req(path, data if data is not None else {}, csrf or self.csrf)
        return json.loads(self.opener.open(req, timeout=30).read())


def test_a_result_waits_across_a_restart_and_a_separate_anond_web_rejects_it(tmp_path, models_dir):
    config, inbox, outbox, failed, state = _config(tmp_path, models_dir)
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "Jane_Doe.jpg").write_bytes(face_jpeg())
    svc = Anond(tmp_path, config).start()
    web = None
    try:
        svc.wait_ready()
        (waiting,) = svc.wait_event("job.review_waiting", 60)
        job = waiting["job"]
        assert _state(state, job)[0] == "review"
        assert list(outbox.rglob("*")) == []  # nothing reaches the outbox before approval
        assert svc.stop() == 0
        svc = Anond(tmp_path, config).start()  # the claim is taken back, the job is not re-run
        svc.wait_ready()
        assert svc.events("job.started") == [] and _state(state, job)[0] == "review"

        web = subprocess.Popen([sys.executable, "-m", "anond.cli", "web", "--config", str(config),
                                "--log-level", "info"], cwd=tmp_path, env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = web.stderr.readline()
        port = json.loads(line)["port"]
        ui = Browserless(f"http://127.0.0.1:{port}", (state / "web.token").read_text().strip())
        (row,) = ui.get("/api/jobs")["jobs"]
        assert (row["job"], row["name"], row["kind"], row["ready"]) == (job, "sub/Jane_Doe.jpg", "image", True)
        assert row["masked"] == {"face": 1}
        detail = ui.get(f"/api/jobs/{job}")
        assert detail["boxes"]["frames"]["0"][0][4] == 0  # one face box for the editor
        with pytest.raises(urllib.error.HTTPError) as err:  # the server checks the schema too
            ui.post(f"/api/jobs/{job}/apply", {"version": 1, "regions": [{"rect": {"x": 1}}]})
        assert err.value.code == 422
        assert ui.post(f"/api/jobs/{job}/reject") == {"ok": True, "action": "reject"}
        wait_for(lambda: (failed / f"{job}.reason.json").exists(), 60, "the rejection", svc)
    finally:
        svc.kill()
        if web is not None:
            web.terminate()
            web.wait(10)
    reason = json.loads((failed / f"{job}.reason.json").read_text())
    assert reason["code"] == "rejected"
    assert (failed / job / "sub" / "Jane_Doe.jpg").read_bytes() == face_jpeg()
    assert list(outbox.rglob("*.jpg")) == [] and not (state / "review" / job).exists()


def test_an_unreviewed_result_expires_with_its_original(tmp_path, models_dir):
    config, inbox, outbox, failed, state = _config(tmp_path, models_dir, failed_retention_days=3 / 86400)
    inbox.mkdir()
    (inbox / "Jane_Doe.jpg").write_bytes(face_jpeg())
    svc = Anond(tmp_path, config).start()
    try:
        svc.wait_ready()
        (waiting,) = svc.wait_event("job.review_waiting", 60)
        svc.wait_event("retention.deleted", 30)
        assert svc.stop() == 0
    finally:
        svc.kill()
    assert _state(state, waiting["job"]) == ("failed", "review_expired")
    assert not (state / "review" / waiting["job"]).exists()
    assert [p for p in inbox.rglob("*") if p.is_file() and "lease" not in p.parts
            and p.name not in ("salt",)] == []


def test_the_ui_is_not_served_beyond_this_host_without_a_login():
    from anond.config import load_settings
    from anond.errors import ConfigError
    from anond.web.auth import _check_hash, hash_password

    with pytest.raises(ConfigError, match="beyond this host"):
        load_settings(None, web={"address": "0.0.0.0"})
    stored = hash_password("correct horse battery")
    assert load_settings(None, web={"address": "0.0.0.0", "password_hash": stored}).web.port == 8750
    assert _check_hash("correct horse battery", stored) and not _check_hash("correct horse", stored)
    with pytest.raises(ConfigError, match="password_hash"):
        load_settings(None, web={"password_hash": "plaintext"})
