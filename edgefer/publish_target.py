"""Where fleet events go and what they look like: the ``mqtt[s]://`` URL, the topic rules, the
publisher's options, and the JSON Schema of one message (see :mod:`edgefer.publish`).

Kept apart from the publisher so that parsing and checking (pure, no paho) can be read and
tested without the threads and the network side.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import EdgeferError

USERNAME_ENV = "EDGEFER_MQTT_USERNAME"
PASSWORD_ENV = "EDGEFER_MQTT_PASSWORD"
DEFAULT_PORT, DEFAULT_TLS_PORT = 1883, 8883

_FACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["box", "score", "track", "emotion", "confidence", "probs"],
    "additionalProperties": False,
    "properties": {
        "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "track": {"type": "integer"},
        "emotion": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "probs": {"type": "object", "minProperties": 1,
                  "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
    },
}

#: JSON Schema (draft 2020-12) of one MQTT message: an ``--events`` line plus device, stream, seq, ts
MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "edgefer MQTT event",
    "type": "object",
    "required": ["device", "stream", "seq", "ts", "frame", "time_s", "faces"],
    "properties": {
        "device": {"type": "string", "minLength": 1},
        "stream": {"type": "string"},
        "seq": {"type": "integer", "minimum": 0},
        "ts": {"type": "number"},
        "frame": {"type": "integer", "minimum": 0},
        "time_s": {"type": ["number", "null"]},
        "file": {"type": "string"},
        "faces": {"type": "array", "items": _FACE_SCHEMA},
    },
}


def topic_part(value: str) -> str:
    """A device or stream name as one topic level: no separators or wildcards."""
    return re.sub(r"[/+#\x00]", "_", value) or "_"


@dataclass
class MqttTarget:
    """Where to publish; ``repr`` and :meth:`url` never show the password."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.topic}"


def parse_url(url: str) -> MqttTarget:
    """``mqtt[s]://[user[:password]@]host[:port]/topic/levels`` -> :class:`MqttTarget`.

    The topic may hold ``{device}`` and ``{stream}``, filled per message (one topic per box and
    camera); it may not hold the wildcards ``+`` and ``#``, which are for subscribers.
    """
    if not isinstance(url, str) or "://" not in url:
        raise EdgeferError(f"--publish needs mqtt://HOST[:PORT]/TOPIC, not {url!r}")
    if "#" in url:  # urlsplit would read it as a fragment and drop it silently
        raise EdgeferError("--publish: the topic has a wildcard (+ or #): those are for subscribers")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise EdgeferError(f"--publish: bad URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise EdgeferError(f"--publish: unsupported scheme {scheme!r}: use mqtt:// or mqtts://")
    tls = scheme in ("mqtts", "ssl")
    host = parts.hostname
    if not host:
        raise EdgeferError("--publish: the URL names no host (mqtt://HOST[:PORT]/TOPIC)")
    topic = unquote(parts.path.lstrip("/"))
    if not topic:
        raise EdgeferError("--publish: the URL names no topic (mqtt://HOST[:PORT]/TOPIC)")
    if parts.query or parts.fragment:
        raise EdgeferError("--publish: the URL takes no query or fragment; give options instead")
    check_topic(topic)
    return MqttTarget(host=host, port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), topic=topic, tls=tls,
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password is not None else None)


def check_topic(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise EdgeferError(f"--publish: topic {topic!r} has a wildcard (+ or #): those are for subscribers")
    if "\x00" in topic or len(topic.encode("utf-8")) > 65535:
        raise EdgeferError("--publish: the topic must be UTF-8 without NUL, at most 65535 bytes")
    try:
        topic.format(device="d", stream="s")
    except (KeyError, IndexError, ValueError) as e:
        raise EdgeferError(f"--publish: topic {topic!r}: only {{device}} and {{stream}} can be filled in ({e})") from None


@dataclass
class MqttOptions:
    """How :class:`~edgefer.publish.MqttPublisher` publishes (every option but the broker's address),
    one object instead of a constructor of twenty arguments; ``repr`` never shows the password.

    ``qos`` 0/1/2; ``on_change`` sends a face only when its track is new or its emotion changed;
    ``buffer`` messages kept while the broker is slow or away (the oldest dropped first);
    ``reconnect_min_s`` doubling up to ``reconnect_max_s`` between reconnection attempts; TLS with
    ``ca_certs`` (else the system's CAs) and an optional client ``certfile``/``keyfile``.
    """

    qos: int = 0
    on_change: bool = False
    device_id: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    tls_insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    buffer: int = 1000
    keepalive: int = 30
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    retain: bool = False

    def checked(self, topic: str) -> MqttOptions:
        """These options validated against ``topic`` (bad input: :class:`EdgeferError`), with the
        credentials completed from the environment and TLS on when certificates are given."""
        qos, buffer = self.qos, self.buffer
        ca_certs, certfile, keyfile = self.ca_certs, self.certfile, self.keyfile
        if qos not in (0, 1, 2):
            raise EdgeferError(f"MQTT QoS must be 0, 1 or 2, not {qos!r}")
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise EdgeferError(f"the MQTT buffer must hold at least 1 message, not {buffer!r}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise EdgeferError("reconnect delays must satisfy 0 < min <= max")
        check_topic(topic)
        for what, path in (("CA certificates", ca_certs), ("client certificate", certfile), ("client key", keyfile)):
            if path is not None and not os.path.isfile(path):
                raise EdgeferError(f"--publish: the {what} file {path} does not exist")
        if (certfile is None) != (keyfile is None) and keyfile is not None:
            raise EdgeferError("--publish: a client key needs its client certificate")
        username = self.username if self.username is not None else os.environ.get(USERNAME_ENV) or None
        password = self.password if self.password is not None else os.environ.get(PASSWORD_ENV) or None
        if password is not None and username is None:
            raise EdgeferError(f"--publish: a password needs a username ({USERNAME_ENV})")
        return replace(self, username=username, password=password, tls=self.tls or bool(ca_certs or certfile))
