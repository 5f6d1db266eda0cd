"""The review UI's HTTP side (Starlette): pages, the JSON API the editor calls, pictures.

    GET  /                          the queue (jobs waiting for review)
    GET  /jobs/{job}                the editor
    GET  /api/jobs                  the queue as JSON
    GET  /api/jobs/{job}            one job: size, frames, boxes per frame, the editor's regions
    GET  /api/jobs/{job}/image/{which}           photo, which = original | masked (JPEG)
    GET  /api/jobs/{job}/frame/{which}/{index}   one video frame (JPEG)
    POST /api/jobs/{job}/apply      the regions (sidecar schema) -> the job runs again
    POST /api/jobs/{job}/approve    the result goes to the outbox
    POST /api/jobs/{job}/reject     the input goes to the failed folder (reason rejected)

Every response: no-store, a strict CSP (everything from this server), no framing. The access
log names the route and the job id, never a file name or a path.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import absolute
from ..errors import AnondError, RegionsError
from ..review import ReviewArea
from .auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, Gate, csrf_ok
from .media import FrameSource, photo_jpeg

STATIC = Path(str(resources.files("anond.web") / "static"))
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; script-src 'self'; "
                               "style-src 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
OPEN_PATHS = ("/login", "/api/login", "/static/")
MAX_BODY = 2 << 20  # a sidecar is at most 1 MiB


class Review:
    """What the routes work on: settings, the review area, the login gate, the frame cache."""

    def __init__(self, settings, log, wake=None) -> None:
        self.settings = settings
        self.area = ReviewArea(settings.service.state_dir)
        self.gate = Gate(settings.web, settings.service.state_dir)
        self.frames = FrameSource()
        self.log = log
        self.wake = wake  # the service's loop, when the UI runs inside it

    def job(self, job_id: str) -> dict:
        try:
            meta = self.area.meta(job_id)
        except ValueError:
            meta = None
        if meta is None:
            raise LookupError(job_id)
        return meta

    def original(self, meta: dict) -> Path:
        """The claimed input: <inbox>/.anond/claims/<owner>/<job>/in/<name>."""
        from ..jobs import CONTROL_DIR, INPUT_DIR

        inbox = next((i for i in self.settings.inboxes if i.name == meta.get("inbox")), None)
        if inbox is None:
            raise LookupError("inbox")
        claims = absolute(inbox.path) / CONTROL_DIR / "claims"
        for found in claims.glob(f"*/{meta['job']}/{INPUT_DIR}/*"):
            if found.is_file() and not found.is_symlink():
                return found
        raise LookupError("original")


def build_app(review: Review) -> Starlette:
    routes = [
        Route("/", page("queue.html"), methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/jobs/{job}", page("editor.html"), methods=["GET"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/api/jobs/{job}", job_detail, methods=["GET"]),
        Route("/api/jobs/{job}/image/{which}", image, methods=["GET"]),
        Route("/api/jobs/{job}/frame/{which}/{index:int}", frame, methods=["GET"]),
        Route("/api/jobs/{job}/{action}", decide, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard)])
    app.state.review = review
    return app


class Guard(BaseHTTPMiddleware):
    """Login and CSRF checks, security headers, the access log (route + job id only)."""

    async def dispatch(self, request: Request, call_next):
        review: Review = request.app.state.review
        started = time.monotonic()
        path = request.url.path
        session = review.gate.session(request.cookies.get(SESSION_COOKIE))
        request.state.session = session
        if session is None and not path.startswith(OPEN_PATHS):
            if path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
                response = JSONResponse({"error": "login required"}, status_code=401)
            else:
                response = RedirectResponse("/login", status_code=303)
        elif request.method == "POST" and path != "/api/login" and not csrf_ok(
                request.headers.get("x-csrf-token"), session.csrf if session else None):
            response = JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        else:
            response = await call_next(request)
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)
        route = request.scope.get("route")
        review.log.info("web.request", method=request.method,
                        route=getattr(route, "path", "static" if path.startswith("/static/") else "?"),
                        job=request.path_params.get("job") if route else None,
                        status=response.status_code, ms=round(1000 * (time.monotonic() - started)))
        return response


def page(name: str):
    async def render(request: Request) -> Response:
        html = (STATIC / name).read_text().replace("{{csrf}}", request.state.session.csrf)
        return HTMLResponse(html)
    return render


async def login_page(request: Request) -> Response:
    import secrets

    # One token per browser until it logs in: a second tab (or a favicon request) must not
    # void the form already shown.
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    html = (STATIC / "login.html").read_text().replace("{{csrf}}", token)
    response = HTMLResponse(html)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict")
    return response


async def login(request: Request) -> Response:
    review: Review = request.app.state.review
    if not csrf_ok(request.headers.get("x-csrf-token"), request.cookies.get(LOGIN_CSRF_COOKIE)):
        return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
    body = await _json(request)
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str) or not await asyncio.to_thread(review.gate.check_secret, secret):
        await asyncio.sleep(1.0)  # a guess a second at most per connection
        review.log.warning("web.login_failed")
        return JSONResponse({"error": "wrong password or token"}, status_code=401)
    sid, _ = review.gate.open_session()
    response = JSONResponse({"ok": True})
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(review.gate.lifetime), httponly=True,
                        samesite="strict")
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    review.log.info("web.login")
    return response


async def logout(request: Request) -> Response:
    request.app.state.review.gate.close_session(request.cookies.get(SESSION_COOKIE))
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE)
    return response


async def jobs(request: Request) -> Response:
    review: Review = request.app.state.review
    rows = []
    for w in await asyncio.to_thread(review.area.waiting):
        m = w.meta
        rows.append({"job": w.job, "inbox": m.get("inbox"), "name": m.get("name"),
                     "kind": m.get("kind"), "duration_s": m.get("duration_s"),
                     "frames": m.get("frames"), "masked": m.get("masked") or {},
                     "verify_fixes": m.get("verify_fixes", 0), "ready": w.ready,
                     "created": m.get("created"), "revision": m.get("revision")})
    return JSONResponse({"jobs": rows})


async def job_detail(request: Request) -> Response:
    review: Review = request.app.state.review
    job_id = request.path_params["job"]
    try:
        meta = review.job(job_id)
    except LookupError:
        return JSONResponse({"error": "no such job waiting for review"}, status_code=404)
    area = review.area
    ready = area.output(job_id) is not None and area.decision(job_id) is None
    regions = area.regions(job_id)
    if regions is None:
        regions = await asyncio.to_thread(_claim_sidecar, review, meta)
    return JSONResponse({"meta": meta, "ready": ready, "boxes": area.boxes(job_id),
                         "regions": regions})


def _claim_sidecar(review: Review, meta: dict) -> dict | None:
    """The sidecar the job came with (hand-written), as the editor's starting regions."""
    from ..jobs import SIDECAR

    try:
        claim_dir = review.original(meta).parent.parent
        return json.loads((claim_dir / SIDECAR).read_bytes())
    except (LookupError, OSError, ValueError):
        return None


def _picture(request: Request, which: str) -> Path:
    review: Review = request.app.state.review
    meta = review.job(request.path_params["job"])
    if which == "original":
        return review.original(meta)
    if which == "masked":
        out = review.area.output(meta["job"])
        if out is None:
            raise LookupError("output")
        return out
    raise LookupError(which)


async def image(request: Request) -> Response:
    review: Review = request.app.state.review
    try:
        path = _picture(request, request.path_params["which"])
        data = await asyncio.to_thread(photo_jpeg, path, review.settings.image)
    except LookupError:
        return JSONResponse({"error": "not found"}, status_code=404)
    except AnondError as exc:
        return JSONResponse({"error": str(exc)}, status_code=422)
    return Response(data, media_type="image/jpeg")


async def frame(request: Request) -> Response:
    review: Review = request.app.state.review
    try:
        path = _picture(request, request.path_params["which"])
        data = await asyncio.to_thread(review.frames.frame_jpeg, path, request.path_params["index"])
    except LookupError:
        return JSONResponse({"error": "not found"}, status_code=404)
    except AnondError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404 if exc.code == "no_such_frame" else 422)
    return Response(data, media_type="image/jpeg")


async def decide(request: Request) -> Response:
    review: Review = request.app.state.review
    job_id, action = request.path_params["job"], request.path_params["action"]
    if action not in ("apply", "approve", "reject"):
        return JSONResponse({"error": "unknown action"}, status_code=404)
    try:
        meta = review.job(job_id)
    except LookupError:
        return JSONResponse({"error": "no such job waiting for review"}, status_code=404)
    if review.area.decision(job_id) is not None or review.area.output(job_id) is None:
        return JSONResponse({"error": "the job is being processed; wait for its result"},
                            status_code=409)
    regions = None
    if action == "apply":
        body = await _json(request)
        try:
            regions = _validated(body, meta)
        except RegionsError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
    await asyncio.to_thread(review.area.decide, job_id, action, regions)
    if review.wake is not None:
        review.wake.set()
    return JSONResponse({"ok": True, "action": action})


def _validated(body, meta: dict) -> dict:
    """The editor's regions checked exactly as `anond process` checks a sidecar."""
    from ..regions import parse_sidecar

    if not isinstance(body, dict):
        raise RegionsError("the body must be a regions sidecar (JSON object)")
    video = meta.get("kind") == "video"
    parse_sidecar(json.dumps(body), width=int(meta.get("width") or 0),
                  height=int(meta.get("height") or 0), frames=meta.get("frames") if video else None,
                  fps=meta.get("fps") if video else None,
                  duration=meta.get("duration_s") if video else None, video=video)
    return body


async def _json(request: Request):
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
