"""The authentication layer in front of Dagster's webserver: who is at the browser, and what they may launch.

A thin ASGI wrapper around the Starlette app the webserver builds. Identity comes from a trusted reverse-proxy
header (oauth2-proxy / Authelia style, believed only from the keyring's `ui.trusted_proxies`) or from the local
login (`/memgov/login`, passwords from the keyring). Every GraphQL mutation is inspected:

* with authentication configured, a visitor who is not signed in changes nothing;
* without it, governance jobs are read-only (launches refused with the reason), other jobs run as before;
* a signed-in user's launches carry their name as a run tag the server seals (client-sent identity tags are
  dropped), and re-executions are refused, since a decision is never replayed from an old run.

A banner on every page says who is signed in, or that governance is read-only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from pipelines.trust import keyring as kr
from pipelines.trust.grants import check_password
from pipelines.trust.identity import GOVERNANCE_JOBS, SEAL_TAG, USER_TAG, VIA_TAG, identity_tags

COOKIE = "memgov_session"
SESSION_S = 8 * 3600
LAUNCHES = ("launchRun", "launchPipelineExecution", "launchMultipleRuns")
REEXECUTIONS = ("launchRunReexecution", "launchPipelineReexecution")
READ_ONLY = ("this UI has no authentication configured, so governance jobs are read-only here: configure the "
             "keyring's ui section (trusted_proxies or local_login; see docs/security.md) or decide "
             "from the CLI with a signed decision (memgov approve ID --key FILE)")


class Refusal(Exception):
    """A mutation the gate will not pass on, answered as a typed result of each field so the UI shows the reason:
    launches as `InvalidSubsetError` (the Launchpad's plain-message dialog), other mutations as
    `UnauthorizedError`; a request the gate cannot read gets a GraphQL error."""

    def __init__(self, message: str, fields: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.fields = fields or []  # (response key, field name)

    def answer(self) -> dict:
        message = f"memgov: {self}"
        if not self.fields:
            return {"data": None, "errors": [{"message": message}]}
        kind = {name: "InvalidSubsetError" if name in LAUNCHES + REEXECUTIONS else "UnauthorizedError"
                for _, name in self.fields}
        return {"data": {key: {"__typename": kind[name], "message": message} for key, name in self.fields}}


def _session_mac(secret: str, user: str, expiry: int) -> str:
    return hmac.new(secret.encode(), f"session\n{user}\n{expiry}".encode(), hashlib.sha256).hexdigest()


def session_cookie(secret: str, user: str, now: float | None = None) -> str:
    expiry = int((now or time.time()) + SESSION_S)
    raw = f"{user}\n{expiry}\n{_session_mac(secret, user, expiry)}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _session_user(secret: str | None, value: str) -> str | None:
    try:
        user, expiry, mac = base64.urlsafe_b64decode(value.encode()).decode().split("\n")
    except (ValueError, UnicodeDecodeError):
        return None
    if not secret or not expiry.isdigit() or int(expiry) < time.time():
        return None
    return user if hmac.compare_digest(mac, _session_mac(secret, user, int(expiry))) else None


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def identify(ring: kr.Keyring, scope) -> tuple[str, str] | None:
    """(user, via) for this request, or None: a header counts only from a trusted proxy, a cookie only if sealed."""
    headers = _headers(scope)
    client = (scope.get("client") or ("", 0))[0]
    if client in ring.ui.trusted_proxies:
        name = headers.get(ring.ui.user_header.lower(), "").strip()
        if name:
            return name, "proxy"
    if ring.ui.local_login and "cookie" in headers:
        morsel = SimpleCookie(headers["cookie"]).get(COOKIE)
        user = _session_user(ring.ui.secret, morsel.value) if morsel else None
        if user:
            return user, "login"
    return None


def _operations(query: str, name: str | None) -> list:
    from graphql import GraphQLError, OperationDefinitionNode, parse

    try:
        doc = parse(query)
    except GraphQLError as exc:
        raise Refusal(f"the GraphQL document does not parse: {exc.message}") from None
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    chosen = [o for o in ops if name is None or (o.name and o.name.value == name)]
    return chosen or ops


def _job_of(params: Any) -> str | None:
    selector = (params or {}).get("selector") or {}
    return selector.get("jobName") or selector.get("pipelineName")


def _param_sets(field, variables: dict) -> list[dict]:
    """The executionParams a launch field receives; they must come as variables so the gate can see them."""
    from graphql import VariableNode

    found = []
    for arg in field.arguments:
        if arg.name.value not in ("executionParams", "executionParamsList"):
            continue
        if not isinstance(arg.value, VariableNode):
            raise Refusal(f"{field.name.value}: pass {arg.name.value} as a GraphQL variable")
        value = variables.get(arg.value.name.value)
        found += value if isinstance(value, list) else [value or {}]
    return found


def _stamp(params: dict, ring: kr.Keyring, user: str, via: str) -> None:
    meta = params.setdefault("executionMetadata", {}) or {}
    params["executionMetadata"] = meta
    tags = [t for t in meta.get("tags") or [] if t.get("key") not in (USER_TAG, SEAL_TAG, VIA_TAG)]
    stamped = identity_tags(ring.ui.secret or "", user, _job_of(params) or "", via)
    meta["tags"] = tags + [{"key": k, "value": v} for k, v in stamped.items()]


def admit_graphql(ring: kr.Keyring, payload: Any, who: tuple[str, str] | None) -> Any:
    """The payload to pass on (identity stamped into launches), or Refusal with the reason."""
    for item in payload if isinstance(payload, list) else [payload]:
        if not isinstance(item, dict) or not isinstance(item.get("query"), str):
            raise Refusal("a GraphQL request is a JSON object with a 'query' string")
        variables = item.setdefault("variables", {}) or {}
        item["variables"] = variables
        for op in _operations(item["query"], item.get("operationName")):
            if op.operation.value != "mutation":
                continue
            try:
                _admit_mutation(ring, op, variables, who)
            except Refusal as exc:
                fields = [((f.alias or f.name).value, f.name.value) for f in op.selection_set.selections
                          if hasattr(f, "name")]
                raise Refusal(str(exc), fields) from None
    return payload


def _admit_mutation(ring: kr.Keyring, op, variables: dict, who: tuple[str, str] | None) -> None:
    if who is None and ring.ui.configured:
        raise Refusal("you are not signed in: sign in (/memgov/login, or through the deployment's proxy) "
                      "to change anything here")
    for field in op.selection_set.selections:
        name = getattr(getattr(field, "name", None), "value", "")
        if name in REEXECUTIONS:
            raise Refusal("re-execution is disabled here: a governance decision is never replayed from an "
                          "old run; launch a new run from the Launchpad")
        if name not in LAUNCHES:
            continue
        for params in _param_sets(field, variables):
            if who is None and _job_of(params) in GOVERNANCE_JOBS:
                raise Refusal(READ_ONLY)
            if who is not None:
                _require_reason(params)
                _stamp(params, ring, *who)


def _require_reason(params: dict) -> None:
    """A governance decision without a reason is refused before it launches, not after a run fails."""
    if _job_of(params) not in GOVERNANCE_JOBS or _job_of(params) == "forget_request":
        return
    config = params.get("runConfigData") or {}
    if isinstance(config, str):  # the Launchpad may send YAML text
        import yaml

        try:
            config = yaml.safe_load(config) or {}
        except yaml.YAMLError:
            return  # Dagster answers unparsable config itself
    ops = (config.get("ops") or {}) if isinstance(config, dict) else {}
    for op_name, entry in ops.items():
        fields = (entry or {}).get("config") if isinstance(entry, dict) else None
        if isinstance(fields, dict) and not str(fields.get("reason") or "").strip():
            raise Refusal(f"ops.{op_name}.config.reason is empty: say why (it is recorded under your name)")


def _banner(ring: kr.Keyring, who: tuple[str, str] | None) -> bytes:
    if who:
        text = (f"memgov: signed in as <b>{html.escape(who[0])}</b> ({who[1]}); decisions are recorded under this "
                "name · <a href='/memgov/releases'>releases and decisions</a>"
                + (" · <a href='/memgov/logout'>sign out</a>" if who[1] == "login" else ""))
    elif ring.ui.configured:
        text = "memgov: not signed in, nothing can be changed · <a href='/memgov/login'>sign in</a>"
    else:
        text = "memgov: no authentication configured, governance jobs are read-only"
    style = ("position:fixed;bottom:0;right:0;z-index:99999;background:#fff8d6;color:#222;font:12px sans-serif;"
             "padding:4px 10px;border:1px solid #d9c36a;border-radius:4px 0 0 0")
    return f"<div id='memgov-identity' style=\"{style}\">{text}</div>".encode()


LOGIN_PAGE = """<!doctype html><html><head><title>memgov sign in</title></head>
<body style="font-family:sans-serif;max-width:26em;margin:4em auto">
<h2>memgov: sign in</h2><p>{message}</p>
<form method="post" action="/memgov/login">
<input type="hidden" name="next" value="{next}">
<label>Name <input name="username" autocomplete="username" required></label><br><br>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label><br><br>
<button type="submit">Sign in</button></form></body></html>"""


class GovernanceGate:
    """ASGI middleware; `home` locates the keyring, read on every request so grants apply at once."""

    def __init__(self, app, home: Path):
        self.app = app
        self.home = Path(home)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            return await self.app(scope, self._no_ws_mutations(receive), send)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            ring = kr.load(self.home)
        except ValueError as exc:  # a keyring that is not what its signed statements say: nobody is anybody
            return await _html(send, 503, f"<p>memgov refuses to serve: {html.escape(str(exc))}</p>")
        who = identify(ring, scope)
        path = scope.get("path", "")
        if path.startswith("/memgov/"):
            return await self._own_route(ring, scope, receive, send, path)
        if scope.get("method") == "POST" and path.endswith("/graphql"):
            return await self._graphql(ring, who, scope, receive, send)
        return await self.app(scope, receive, self._with_banner(send, ring, who))

    async def _graphql(self, ring, who, scope, receive, send):
        body = await _read_body(receive)
        try:
            payload = admit_graphql(ring, json.loads(body or b"null"), who)
        except ValueError:
            payload = None  # not JSON: Dagster answers it (with its own error); nothing to stamp
        except Refusal as exc:
            return await _json(send, 200, exc.answer())
        if payload is not None:
            body = json.dumps(payload).encode()
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
                 + [(b"content-length", str(len(body)).encode())]}
        return await self.app(scope, _replay(body, receive), send)

    def _no_ws_mutations(self, receive):
        async def guarded():
            message = await receive()
            text = message.get("text") or ""
            if message.get("type") == "websocket.receive" and "mutation" in text:
                return {"type": "websocket.disconnect", "code": 1008}
            return message
        return guarded

    def _with_banner(self, send, ring, who):
        state: dict[str, Any] = {"html": False, "start": None, "chunks": []}

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                state["html"] = headers.get(b"content-type", b"").startswith(b"text/html")
                if not state["html"]:
                    return await send(message)
                state["start"] = message
                return None
            if not state["html"]:
                return await send(message)
            state["chunks"].append(message.get("body", b""))
            if message.get("more_body"):
                return None
            page = b"".join(state["chunks"]).replace(b"</body>", _banner(ring, who) + b"</body>", 1)
            start = state["start"]
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(page)).encode())]})
            return await send({"type": "http.response.body", "body": page})
        return wrapped

    async def _own_route(self, ring, scope, receive, send, path):
        if path == "/memgov/whoami":
            who = identify(ring, scope)
            return await _json(send, 200, {"user": who[0] if who else None, "via": who[1] if who else None,
                                           "authentication": ring.ui.configured})
        if path == "/memgov/releases":
            return await self._releases(ring, scope, receive, send)
        if path == "/memgov/forget":
            return await self._forget(ring, scope, receive, send)
        if path == "/memgov/rollback":
            return await self._rollback(ring, scope, receive, send)
        if path == "/memgov/logout":
            return await _redirect(send, "/", f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict")
        if path != "/memgov/login":
            return await _html(send, 404, "<p>not found</p>")
        if not ring.ui.local_login:
            return await _html(send, 404, "<p>local login is not enabled in the keyring's ui section</p>")
        if scope.get("method") != "POST":
            nxt = parse_qs(scope.get("query_string", b"").decode()).get("next", ["/"])[0]
            return await _html(send, 200, LOGIN_PAGE.format(message="Decisions are recorded under this name.",
                                                             next=html.escape(_local(nxt))))
        form = parse_qs((await _read_body(receive)).decode("utf-8", "replace"))
        name, secret = form.get("username", [""])[0], form.get("password", [""])[0]
        found = ring.person(name)
        if found is None or not check_password(found[1].password, secret):
            return await _html(send, 401, LOGIN_PAGE.format(message="Name or password not recognised.",
                                                            next=html.escape(_local(form.get("next", ["/"])[0]))))
        cookie = (f"{COOKIE}={session_cookie(ring.ui.secret or '', found[0])}; Max-Age={SESSION_S}; Path=/; "
                  "HttpOnly; SameSite=Strict")
        return await _redirect(send, _local(form.get("next", ["/"])[0]), cookie)

    async def _releases(self, ring, scope, receive, send):
        """The approver's page; a POST launches release_decision as the signed-in user, then shows its run."""
        from memgov import decide_page as page
        from pipelines.deployment.workspace import Workspace
        from pipelines.governance.policy_in_force import policy_in_force
        from pipelines.governance.releases_view import releases_view

        if scope.get("method") == "POST":
            return await self._launch_form(ring, scope, receive, send, page, "decide",
                                           lambda form, user, view, granted: page.parse_form(form, view, granted))
        who = identify(ring, scope)
        ws = Workspace.open(self.home)
        user = who[0] if who else None
        return await _html(send, 200, page.render_page(releases_view(ws, policy_in_force(ws, None)), user,
                                                       ring.roles_of(user) if user else []))

    async def _forget(self, ring, scope, receive, send):
        """A POST of the forget form launches forget_filing as the signed-in user, then shows its run."""
        from memgov import forget_page

        return await self._launch_form(ring, scope, receive, send, forget_page, "file a forget request",
                                       lambda form, user, view, granted: forget_page.parse_filing(form, user))

    async def _rollback(self, ring, scope, receive, send):
        """A POST of the rollback form launches the rollback job as the signed-in user, then shows its run."""
        from memgov import rollback_page

        return await self._launch_form(ring, scope, receive, send, rollback_page, "roll back",
                                       lambda form, user, view, granted: rollback_page.parse_rollback(form, view,
                                                                                                      granted))

    async def _launch_form(self, ring, scope, receive, send, module, verb: str, parse):
        """Check a page form, launch its job as the signed-in user and land on the run; a refusal re-renders the
        releases page with the reason."""
        from memgov import decide_page as page
        from pipelines.deployment.workspace import Workspace
        from pipelines.governance.policy_in_force import policy_in_force
        from pipelines.governance.releases_view import releases_view

        if scope.get("method") != "POST":
            return await _redirect(send, "/memgov/releases", "")
        who = identify(ring, scope)
        user = who[0] if who else None
        granted = ring.roles_of(user) if user else []
        ws = Workspace.open(self.home)
        view = releases_view(ws, policy_in_force(ws, None))
        form = parse_qs((await _read_body(receive)).decode("utf-8", "replace"), keep_blank_values=True)
        try:
            if who is None:
                raise page.FormRefused(f"you are not signed in: sign in to {verb}")
            launch = parse(form, who[0], view, granted)
            location, repository = await self._repository(module.JOB)
            payload = admit_graphql(ring, module.launch_payload(launch, location, repository), who)
            run_id = page.launch_outcome(await self._inner_graphql(payload))
        except (page.FormRefused, Refusal) as exc:
            return await _html(send, 400, page.render_page(view, user, granted, str(exc), error=True))
        return await _redirect(send, f"/runs/{run_id}", "")

    async def _repository(self, job: str) -> tuple[str, str]:
        from memgov.forms import LOCATION, FormRefused

        answer = await self._inner_graphql({"query": LOCATION})
        nodes = ((answer.get("data") or {}).get("repositoriesOrError") or {}).get("nodes") or []
        for node in nodes:
            if any(j["name"] == job for j in node.get("jobs") or []):
                return node["location"]["name"], node["name"]
        raise FormRefused(f"no code location defines the {job} job; is the deployment loaded?")

    async def _inner_graphql(self, payload: Any) -> dict:
        """A GraphQL call to the wrapped webserver from this process (already admitted by the caller)."""
        body = json.dumps(payload).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
                 "root_path": "", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80)}
        chunks: list[bytes] = []

        async def collect(message):
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, _replay(body, _never_disconnect), collect)
        return json.loads(b"".join(chunks) or b"{}")


async def _never_disconnect() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def _local(target: str) -> str:
    """Only same-site paths after login (an open redirect would hand the session to another site)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, upstream):
    """The (possibly re-written) body once, then the client's own messages (its eventual disconnect)."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return await upstream()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _send(send, status: int, ctype: str, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send, status: int, obj: Any) -> None:
    await _send(send, status, "application/json", json.dumps(obj).encode())


async def _html(send, status: int, page: str) -> None:
    await _send(send, status, "text/html; charset=utf-8", page.encode())


async def _redirect(send, location: str, cookie: str) -> None:
    extra = [(b"location", quote(location, safe="/?=&").encode())]
    await _send(send, 303, "text/plain", b"", extra + ([(b"set-cookie", cookie.encode())] if cookie else []))
