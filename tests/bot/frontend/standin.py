"""A local aiohttp server standing in for Discord's REST API (and its attachment CDN).

discord.py is pointed at it through `discord.http.Route.BASE`. It answers the few endpoints the bot
uses the way Discord does, keeps the messages it was sent (so buttons on them can be clicked), and
records every call: interaction callbacks, webhook edits and followups (multipart with files), and
plain channel messages. Tests assert on `StandIn.calls`.

Tokens can be expired (`expire(token)`): webhook calls with them get 401, as Discord answers after
15 minutes. Attachments are served from `/attachments/...` under the CDN host names, which the
tests' aiohttp resolver maps to this server.

It holds the bot to Discord's limits: a message, autocomplete answer or modal over one of them
(`discord_limits`) is refused with 400 "Invalid Form Body", as Discord refuses it, and kept in
`violations`, which the harness asserts is empty after every test. Uploads over `upload_limit` get
413. `fail(kind, status)` makes the next calls of one kind fail (a 5xx outage, or status 0: the
connection drops without an answer).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.bot.frontend.discord_limits import UPLOAD_LIMIT, SentFile, callback_problems, message_problems

APPLICATION_ID = 900000000000000001
BOT_USER_ID = 900000000000000002
_snowflakes = itertools.count(1_200_000_000_000_000_000)


def snowflake() -> int:
    return next(_snowflakes)


@dataclass
class Call:
    """One request the bot made to the stand-in."""

    kind: str  # "callback", "edit_original", "followup", "edit_followup", "delete_original", "channel_message", ...
    method: str
    path: str
    token: str | None
    payload: dict[str, Any]
    files: list[SentFile] = field(default_factory=list)
    message_id: int | None = None  # the message this call created or edited
    at: float = field(default_factory=time.monotonic)  # when the stand-in received it

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def embeds(self) -> list[dict]:
        return self.payload.get("embeds") or []

    @property
    def flags(self) -> int:
        return int(self.payload.get("flags") or self.payload.get("data", {}).get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    def buttons(self) -> list[dict]:
        body = self.payload.get("data", self.payload) if self.kind == "callback" else self.payload
        return [c for row in body.get("components") or [] for c in row.get("components", []) if c["type"] == 2]


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json.
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


def _error(status: int, code: int, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status=status)


class StandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[int, dict] = {}  # every message the bot created, by id, as Discord would return it
        self.original: dict[str, int] = {}  # interaction token -> id of its original response message
        self.interaction_channel: dict[str, int] = {}  # token -> channel id (for messages created via webhooks)
        self.expired: set[str] = set()
        self.blobs: dict[str, tuple[bytes, str]] = {}  # CDN path -> (bytes, content type)
        self.cdn_requests: list[str] = []
        self.violations: list[tuple[str, list[str]]] = []  # (call kind, problems) the stand-in refused with 400
        self.upload_limit = UPLOAD_LIMIT  # bytes of files in one request; more gets 413, as from Discord
        self._failures: dict[str, list[int | None]] = {}  # call kind -> [status, calls left (None = always)]
        self.port: int = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        r = app.router
        api = "/api/v10"
        r.add_get(f"{api}/users/@me", self._me)
        r.add_get(f"{api}/oauth2/applications/@me", self._application)
        r.add_post(f"{api}/interactions/{{iid}}/{{token}}/callback", self._callback)
        r.add_route("*", f"{api}/webhooks/{{app}}/{{token}}/messages/{{mid}}", self._webhook_message)
        r.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        r.add_post(f"{api}/channels/{{cid}}/messages", self._channel_message)
        r.add_route("*", f"{api}/channels/{{cid}}/messages/{{mid}}", self._channel_message_edit)
        r.add_route("*", f"{api}/applications/{{app}}/commands", self._sync_refused)
        r.add_route("*", f"{api}/applications/{{app}}/guilds/{{gid}}/commands", self._sync_refused)
        r.add_get("/attachments/{tail:.*}", self._cdn)
        r.add_get("/_calls", self._list_calls)  # for a stand-in in another process (the benchmark)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)  # bursts of new connections
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    # --- test helpers --------------------------------------------------------------------------
    def expire(self, token: str) -> None:
        self.expired.add(token)

    def fail(self, kind: str, status: int, *, times: int | None = 1) -> None:
        """Answer the next `times` calls of `kind` ("edit_original", "followup", "channel_message", ...) with
        `status` (None: every one from now on). Status 0 drops the connection without an answer."""
        self._failures[kind] = [status, times]

    def add_blob(self, path: str, data: bytes, content_type: str) -> str:
        """Serve `data` at `/attachments/<path>`; returns the CDN URL the payload should carry."""
        self.blobs[path] = (data, content_type)
        return f"http://cdn.discordapp.com:{self.port}/attachments/{path}"

    def of_kind(self, kind: str, token: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.kind == kind and (token is None or c.token == token)]

    def for_token(self, token: str) -> list[Call]:
        return [c for c in self.calls if c.token == token]

    async def wait_for(self, predicate: Callable[[list[Call]], Any], within: float = 15.0) -> Any:
        """Wait until `predicate(calls)` is truthy and return its value."""

        async def _wait() -> Any:
            async with self._changed:
                while not (result := predicate(self.calls)):
                    await self._changed.wait()
                return result

        try:
            return await asyncio.wait_for(_wait(), within)
        except TimeoutError:
            summary = "\n".join(f"  {c.kind} {c.path} {c.payload}"[:400] for c in self.calls[-15:])
            raise AssertionError(f"stand-in: condition not met within {within}s; last calls:\n{summary}") from None

    async def _refuse(self, kind: str, request: web.Request, token: str | None, body: dict, files: list[SentFile],
                      problems: list[str]) -> web.StreamResponse | None:  # fmt: skip
        """The answer Discord would give instead of doing the call, or None to go ahead."""
        failure = self._failures.get(kind)
        if failure is not None:
            status, left = failure
            if left is not None:
                failure[1] = left - 1
                if failure[1] <= 0:
                    del self._failures[kind]
            await self._record(Call(f"{kind}_failed", request.method, request.path, token, body, files))
            if status == 0:
                assert request.transport is not None
                request.transport.close()  # the client sees the connection drop
                return web.Response(status=500)  # never reaches the client
            return _error(int(status), 0, "stand-in: injected failure")  # type: ignore[arg-type]
        if sum(len(f.data) for f in files) > self.upload_limit:
            await self._record(Call(f"{kind}_too_large", request.method, request.path, token, body, files))
            return _error(413, 40005, "Request entity too large")
        if problems:
            self.violations.append((kind, problems))
            await self._record(Call(f"{kind}_invalid", request.method, request.path, token, body, files))
            errors = {"_stand_in": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": p} for p in problems]}}
            return _json({"code": 50035, "message": "Invalid Form Body", "errors": errors}, status=400)
        return None

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    # --- request parsing -----------------------------------------------------------------------
    @staticmethod
    async def _read_body(request: web.Request) -> tuple[dict, list[SentFile]]:
        if request.content_type == "multipart/form-data":
            payload: dict = {}
            files: list[SentFile] = []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":  # type: ignore[union-attr]
                    payload = json.loads(data)
                else:
                    files.append(
                        SentFile(
                            filename=part.filename or "",  # type: ignore[union-attr]
                            data=bytes(data),
                            content_type=part.headers.get("Content-Type", ""),  # type: ignore[union-attr]
                        )
                    )
            return payload, files
        if request.can_read_body:
            return await request.json(), []
        return {}, []

    def _message(self, channel_id: int, body: dict, files: list[SentFile], *, message_id: int | None = None) -> dict:
        message_id = message_id or snowflake()
        previous = self.messages.get(message_id, {})
        attachments = [
            {
                "id": str(snowflake()),
                "filename": f.filename,
                "size": len(f.data),
                "url": f"https://cdn.discordapp.com/attachments/{channel_id}/{message_id}/{f.filename}",
                "proxy_url": f"https://media.discordapp.net/attachments/{channel_id}/{message_id}/{f.filename}",
                "content_type": f.content_type,
            }
            for f in files
        ]
        if "attachments" in body and not files:
            attachments = [
                a for a in previous.get("attachments", []) if any(a["id"] == b.get("id") for b in body["attachments"])
            ]
        message = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": 0,
            "content": body.get("content", previous.get("content", "")) or "",
            "author": _user(BOT_USER_ID, "stylecodes", bot=True),
            "attachments": attachments if (files or "attachments" in body) else previous.get("attachments", []),
            "embeds": body.get("embeds", previous.get("embeds", [])) or [],
            "components": body.get("components", previous.get("components", [])) or [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": "2026-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": int(body.get("flags", previous.get("flags", 0)) or 0),
            "application_id": str(APPLICATION_ID),
            "webhook_id": str(APPLICATION_ID),
        }
        self.messages[message_id] = message
        return message

    # --- handlers ------------------------------------------------------------------------------
    async def _me(self, request: web.Request) -> web.Response:
        return _json(_user(BOT_USER_ID, "stylecodes", bot=True))

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APPLICATION_ID),
                "name": "stylecodes",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": _user(100, "owner"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _callback(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body, files = await self._read_body(request)
        if token in self.expired:
            await self._record(Call("callback_refused", "POST", request.path, token, body, files))
            return _error(404, 10062, "Unknown interaction")
        if refusal := await self._refuse("callback", request, token, body, files, callback_problems(body, files)):
            return refusal
        callback_type = body.get("type")
        data = body.get("data") or {}
        message_id = None
        if callback_type in (4, 5):  # a message (4) or a deferred "thinking" message (5)
            channel_id = self.interaction_channel.get(token, 0)
            message = self._message(channel_id, data, files)
            message_id = int(message["id"])
            self.original[token] = message_id
        elif callback_type in (6, 7):  # (deferred) update of the message the component is on
            message_id = self.original.get(f"component:{token}")
            if message_id is not None:
                self.original[token] = message_id
                if callback_type == 7 and message_id in self.messages:
                    channel_id = int(self.messages[message_id]["channel_id"])
                    self._message(channel_id, data, files, message_id=message_id)
        await self._record(Call("callback", "POST", request.path, token, body, files, message_id))
        reply = {
            "interaction": {
                "id": request.match_info["iid"],
                "type": 2,
                "response_message_id": str(message_id) if message_id else None,
                "response_message_loading": callback_type == 5,
                "response_message_ephemeral": bool(int(data.get("flags") or 0) & 64),
            }
        }
        if message_id is not None:
            reply["resource"] = {"type": callback_type, "message": self.messages[message_id]}
        return _json(reply)

    async def _webhook_message(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        mid = request.match_info["mid"]
        body, files = await self._read_body(request)
        original = mid == "@original"
        kind = {"PATCH": "edit", "DELETE": "delete", "GET": "get"}.get(request.method, request.method.lower())
        kind = f"{kind}_original" if original else f"{kind}_followup"
        if token in self.expired:
            await self._record(Call(f"{kind}_refused", request.method, request.path, token, body, files))
            return _error(401, 50027, "Invalid Webhook Token")
        message_id = self.original.get(token) if original else int(mid)
        if message_id is None or message_id not in self.messages:
            await self._record(Call(f"{kind}_refused", request.method, request.path, token, body, files))
            return _error(404, 10008, "Unknown Message")
        problems = message_problems(body, files) if request.method == "PATCH" else []
        if refusal := await self._refuse(kind, request, token, body, files, problems):
            return refusal
        await self._record(Call(kind, request.method, request.path, token, body, files, message_id))
        if request.method == "DELETE":
            self.messages.pop(message_id, None)
            return web.Response(status=204)
        if request.method == "PATCH":
            channel_id = int(self.messages[message_id]["channel_id"])
            return _json(self._message(channel_id, body, files, message_id=message_id))
        return _json(self.messages[message_id])

    async def _followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body, files = await self._read_body(request)
        if token in self.expired:
            await self._record(Call("followup_refused", "POST", request.path, token, body, files))
            return _error(401, 50027, "Invalid Webhook Token")
        if refusal := await self._refuse("followup", request, token, body, files, message_problems(body, files)):
            return refusal
        message = self._message(self.interaction_channel.get(token, 0), body, files)
        await self._record(Call("followup", "POST", request.path, token, body, files, int(message["id"])))
        return _json(message)

    async def _channel_message(self, request: web.Request) -> web.Response:
        body, files = await self._read_body(request)
        problems = message_problems(body, files)
        if refusal := await self._refuse("channel_message", request, None, body, files, problems):
            return refusal
        message = self._message(int(request.match_info["cid"]), body, files)
        await self._record(Call("channel_message", "POST", request.path, None, body, files, int(message["id"])))
        return _json(message)

    async def _channel_message_edit(self, request: web.Request) -> web.Response:
        body, files = await self._read_body(request)
        message_id = int(request.match_info["mid"])
        kind = {"PATCH": "channel_edit", "DELETE": "channel_delete"}.get(request.method, "channel_other")
        if message_id not in self.messages:
            await self._record(Call(f"{kind}_refused", request.method, request.path, None, body, files))
            return _error(404, 10008, "Unknown Message")
        problems = message_problems(body, files) if request.method == "PATCH" else []
        if refusal := await self._refuse(kind, request, None, body, files, problems):
            return refusal
        await self._record(Call(kind, request.method, request.path, None, body, files, message_id))
        if request.method == "DELETE":
            self.messages.pop(message_id, None)
            return web.Response(status=204)
        return _json(self._message(int(request.match_info["cid"]), body, files, message_id=message_id))

    async def _sync_refused(self, request: web.Request) -> web.Response:
        body, files = await self._read_body(request)
        await self._record(Call("command_sync", request.method, request.path, None, {"body": body}, files))
        return _error(403, 0, "tests must never sync commands")

    async def _list_calls(self, request: web.Request) -> web.Response:
        calls = [{"kind": c.kind, "token": c.token, "at": c.at, "type": c.payload.get("type")} for c in self.calls]
        return _json(calls)

    async def _cdn(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        self.cdn_requests.append(tail)
        if tail not in self.blobs:
            return web.Response(status=404)
        data, content_type = self.blobs[tail]
        return web.Response(body=data, headers={"Content-Type": content_type})


def _user(user_id: int, name: str, *, bot: bool = False) -> dict:
    return {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
        "public_flags": 0,
        "bot": bot,
    }
