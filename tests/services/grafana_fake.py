"""A loopback HTTP server that answers like Grafana's documented HTTP API, and records requests.

No Grafana can be installed on these machines (see ../shared/COMPONENTS.md), so the push
is checked against this fake, written from Grafana's HTTP API reference:

* auth: ``Authorization: Bearer <token>`` or basic auth; anything else 401
  ``{"message": "Unauthorized"}`` (``/api/health`` needs none); a Viewer's token may
  read, and gets 403 on writes;
* ``GET /api/folders/{uid}`` (404 ``folder not found``), ``POST /api/folders``
  (409 if the uid exists), ``PUT /api/folders/{uid}`` (412 ``version-mismatch`` unless
  ``overwrite`` or the current ``version``);
* ``GET /api/datasources/uid/{uid}``, ``GET /api/datasources/name/{name}`` (404 ``Data
  source not found``), ``POST /api/datasources`` (409 on a taken name),
  ``PUT /api/datasources/uid/{uid}``; answers never contain ``secureJsonData``, only
  ``secureJsonFields: {"password": true}``;
* ``POST /api/dashboards/db``: a new uid is created (version 1); an existing one needs
  ``overwrite: true`` or its current ``version``, else 412 ``version-mismatch``; a title
  taken by another uid in the same folder is 412 ``name-exists`` unless ``overwrite``;
  ``GET /api/dashboards/uid/{uid}`` returns ``{"dashboard": ..., "meta": {"folderUid": ...}}``;
  ``DELETE /api/dashboards/uid/{uid}`` answers ``{"title", "message", "uid"}`` (404 if unknown);
* ``GET /api/search?type=dash-db&tag=T`` lists dashboards carrying every given tag as
  ``{"uid", "title", "type", "tags", "folderUid", "folderTitle", ...}`` (sorted by title).
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    query: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class GrafanaFake:
    token: str | None = "grafana-token"
    basic: tuple[str, str] | None = None
    #: A Viewer's token: reads are answered, writes get 403.
    viewer_token: str | None = None
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: uid -> (dashboard, folderUid)
    dashboards: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _next_id: int = 1
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _authorized(self, header: str | None) -> bool:
        if header is None:
            return False
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if self.basic is not None and header.startswith("Basic "):
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            return (user, pw) == self.basic
        return False

    def handle(self, req: Request) -> tuple[int, Any]:
        if req.path == "/api/health":
            return 200, {"commit": "fake", "database": "ok", "version": "11.6.0"}
        auth = req.headers.get("authorization")
        if self.viewer_token is not None and auth == f"Bearer {self.viewer_token}":
            if req.method != "GET":
                return 403, {
                    "message": "You'll need additional permissions to perform this action. "
                    "Permissions needed: folders:create"
                }
        elif not self._authorized(auth):
            return 401, {"message": "Unauthorized"}
        parts = [unquote(p) for p in req.path.strip("/").split("/")]
        m, b = req.method, req.body
        if parts[:2] == ["api", "folders"]:
            return self._folder(m, parts[2:], b)
        if parts[:2] == ["api", "datasources"]:
            return self._datasource(m, parts[2:], b)
        if parts[:2] == ["api", "dashboards"]:
            return self._dashboard(m, parts[2:], b)
        if parts == ["api", "search"] and m == "GET":
            return self._search(req.query)
        return 404, {"message": "Not found"}

    def _search(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        if query.get("type", ["dash-db"]) != ["dash-db"]:
            return 200, []
        wanted = set(query.get("tag", []))
        hits = []
        for uid, (dash, folder) in self.dashboards.items():
            tags = list(dash.get("tags") or [])
            if not wanted <= set(tags):
                continue
            f = self.folders.get(folder)
            hits.append(
                {
                    "id": dash["id"],
                    "uid": uid,
                    "title": dash["title"],
                    "uri": f"db/{uid}",
                    "url": f"/d/{uid}/x",
                    "slug": "",
                    "type": "dash-db",
                    "tags": tags,
                    "isStarred": False,
                    **(
                        {
                            "folderId": f["id"],
                            "folderUid": folder,
                            "folderTitle": f["title"],
                            "folderUrl": f["url"],
                        }
                        if f
                        else {}
                    ),
                }
            )
        return 200, sorted(hits, key=lambda h: h["title"])

    def _folder(self, m: str, rest: list[str], b: Any) -> tuple[int, Any]:
        if m == "GET" and len(rest) == 1:
            f = self.folders.get(rest[0])
            return (200, f) if f else (404, {"message": "folder not found", "status": "not-found"})
        if m == "POST" and not rest:
            uid = b.get("uid") or f"f{self._next_id}"
            if uid in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            f = {
                "id": self._id(),
                "uid": uid,
                "title": b["title"],
                "version": 1,
                "url": f"/dashboards/f/{uid}/",
            }
            self.folders[uid] = f
            return 200, f
        if m == "PUT" and len(rest) == 1:
            f = self.folders.get(rest[0])
            if f is None:
                return 404, {"message": "folder not found", "status": "not-found"}
            if not b.get("overwrite") and b.get("version") != f["version"]:
                return 412, {
                    "message": "the folder has been changed by someone else",
                    "status": "version-mismatch",
                }
            f.update(title=b.get("title", f["title"]), version=f["version"] + 1)
            return 200, f
        return 405, {"message": "Method not allowed"}

    def _public_ds(self, ds: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in ds.items() if k != "secureJsonData"}
        out["secureJsonFields"] = dict.fromkeys(ds.get("secureJsonData") or {}, True)
        return out

    def _datasource(self, m: str, rest: list[str], b: Any) -> tuple[int, Any]:
        missing = (404, {"message": "Data source not found"})
        if m == "GET" and len(rest) == 2 and rest[0] in ("uid", "name"):
            key = "uid" if rest[0] == "uid" else "name"
            found = [d for d in self.datasources.values() if d[key] == rest[1]]
            return (200, self._public_ds(found[0])) if found else missing
        if m == "POST" and not rest:
            if any(d["name"] == b["name"] for d in self.datasources.values()):
                return 409, {"message": "data source with the same name already exists"}
            ds = {"id": self._id(), "orgId": 1, "jsonData": {}, "version": 1, "readOnly": False, **b}
            self.datasources[ds["uid"]] = ds
            return 200, {
                "datasource": self._public_ds(ds),
                "id": ds["id"],
                "message": "Datasource added",
                "name": ds["name"],
            }
        if m == "PUT" and len(rest) == 2 and rest[0] == "uid":
            old = self.datasources.get(rest[1])
            if old is None:
                return missing
            ds = {
                "id": old["id"],
                "orgId": 1,
                "jsonData": {},
                "readOnly": False,
                **b,
                "version": old["version"] + 1,
            }
            if not b.get("secureJsonData") and old.get("secureJsonData"):
                ds["secureJsonData"] = old["secureJsonData"]
            self.datasources[rest[1]] = ds
            return 200, {
                "datasource": self._public_ds(ds),
                "id": ds["id"],
                "message": "Datasource updated",
                "name": ds["name"],
            }
        return 405, {"message": "Method not allowed"}

    def _dashboard(self, m: str, rest: list[str], b: Any) -> tuple[int, Any]:
        if m == "GET" and len(rest) == 2 and rest[0] == "uid":
            got = self.dashboards.get(rest[1])
            if got is None:
                return 404, {"message": "Dashboard not found"}
            dash, folder = got
            return 200, {
                "dashboard": copy.deepcopy(dash),
                "meta": {"folderUid": folder, "slug": "", "provisioned": False},
            }
        if m == "DELETE" and len(rest) == 2 and rest[0] == "uid":
            gone = self.dashboards.pop(rest[1], None)
            if gone is None:
                return 404, {"message": "Dashboard not found"}
            title = gone[0]["title"]
            return 200, {"title": title, "message": f"Dashboard {title} deleted", "uid": rest[1]}
        if m == "POST" and rest == ["db"]:
            dash = copy.deepcopy(b["dashboard"])
            folder = b.get("folderUid", "")
            overwrite = bool(b.get("overwrite"))
            uid = dash["uid"]
            old = self.dashboards.get(uid)
            if not overwrite:
                if old is not None and dash.get("version") != old[0]["version"]:
                    return 412, {
                        "message": "The dashboard has been changed by someone else",
                        "status": "version-mismatch",
                    }
                for other, (d, f) in self.dashboards.items():
                    if other != uid and f == folder and d["title"] == dash["title"]:
                        return 412, {
                            "message": "A dashboard with the same name in the folder already exists",
                            "status": "name-exists",
                        }
            dash["id"] = old[0]["id"] if old else self._id()
            dash["version"] = old[0]["version"] + 1 if old else 1
            self.dashboards[uid] = (dash, folder)
            return 200, {
                "id": dash["id"],
                "uid": uid,
                "url": f"/d/{uid}/x",
                "status": "success",
                "version": dash["version"],
                "slug": "x",
            }
        return 405, {"message": "Method not allowed"}

    def start(self) -> GrafanaFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    parse_qs(parts.query),
                )
                with fake._lock:
                    fake.requests.append(req)
                    status, answer = fake.handle(req)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="grafana-fake", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
