"""Fleet events over MQTT: ``edgefer run --publish mqtt://HOST:PORT/TOPIC``.

A fleet of edge boxes (one per camera or room) sends its per-frame results to one place through
a standard broker with a standard client (paho-mqtt), not a home-made socket. Each message is the
``--events`` JSON line of one frame plus who sent it::

    {"device": "box-12", "stream": "cam0", "seq": 41, "ts": 1767000000.123,
     "frame": 41, "time_s": 1.3667, "faces": [{"box": [...], "score": 0.99, "track": 1,
     "emotion": "happy", "confidence": 0.87, "probs": {...}}]}

``seq`` counts the messages this publisher accepted (from 0), so a consumer sees a gap where
messages were dropped; ``ts`` is the sender's wall clock (seconds since the epoch).
:data:`MESSAGE_SCHEMA` is the JSON Schema every message satisfies.

The loop must never wait on the network: a broker that goes away must not stop or slow the
video loop. So :meth:`MqttPublisher.publish` only serialises the event and appends it to a
bounded buffer (microseconds, no network, no paho lock); a sender thread hands buffered messages
to paho while connected, and paho's network thread writes them and reconnects with exponential
backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``). When the buffer is full
(disconnected, or a broker slower than the camera) the **oldest** message is dropped and counted:
after an outage the newest state arrives first, and the summary says how much was lost.

Accounting (:meth:`MqttPublisher.report`, after :meth:`close`): every accepted message is
``delivered`` (QoS 0: written to the socket; QoS 1: acknowledged; QoS 2: completed), ``dropped``
(buffer full, or still buffered at close) or ``unconfirmed`` (handed to the client but never
confirmed: QoS 0 messages lost with a broken connection, or acknowledgements still missing at
close). QoS 1 and 2 messages handed to the client are re-sent by paho after a reconnect.

``on_change=True`` publishes a face only when its track is new or its emotion changed since the
last message about that track (frames with no such face are not sent, counted as
``skipped_unchanged``): a fleet of quiet rooms then costs almost nothing.

Credentials come from the options, the URL (``mqtt://user:pass@host/...``, discouraged: process
lists show it) or the environment (``EDGEFER_MQTT_USERNAME``, ``EDGEFER_MQTT_PASSWORD``), and are
never printed: :meth:`describe`, :meth:`report` and errors show the host, port and topic only.
``mqtts://`` (or ``tls=True``) connects with TLS, verifying the broker against ``ca_certs`` or the
system's CAs.

Needs paho-mqtt >= 2.0: ``pip install 'edgefer[mqtt]'``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any

from .errors import EdgeferError
from .extras import install_hint
from .publish_target import (
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    MESSAGE_SCHEMA,
    PASSWORD_ENV,
    USERNAME_ENV,
    MqttOptions,
    MqttTarget,
    check_topic,
    parse_url,
    topic_part,
)

__all__ = ["DEFAULT_PORT", "DEFAULT_TLS_PORT", "MESSAGE_SCHEMA", "PASSWORD_ENV", "USERNAME_ENV", "MqttOptions",
           "MqttPublisher", "MqttTarget", "check_topic", "parse_url", "topic_part"]

#: messages handed to paho and not yet confirmed, at most: paho's own queues stay bounded too
MAX_PENDING = 100
#: tracks remembered for on_change (oldest forgotten first): bounded on a crowd camera running for weeks
ON_CHANGE_TRACKS = 10_000


class MqttPublisher:
    """Publish frame events to an MQTT broker without ever blocking the caller.

    Per frame call :meth:`publish_frame` (or :meth:`publish` with an event dict); at the end
    :meth:`close`, then :meth:`report` for the run summary. Thread-safe: several streams may
    publish through one publisher.
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, topic: str = "edgefer/events",
                 options: MqttOptions | None = None, **kw: Any):
        """``options`` (or the same fields as keywords, which win: ``qos=1, buffer=500``) say how to
        publish; see :class:`~edgefer.publish_target.MqttOptions`. Bad input raises
        :class:`EdgeferError` before any connection is tried."""
        o = replace(options or MqttOptions(), **kw)  # an unknown keyword is a TypeError, as for any call
        try:
            import paho.mqtt.client as mqtt
        except ModuleNotFoundError:
            raise EdgeferError(f"--publish needs paho-mqtt, not installed here: {install_hint('mqtt')}") from None
        o = o.checked(topic)
        self.target = MqttTarget(host, int(port), topic, o.tls, o.username, o.password)
        self.qos, self.on_change, self.retain = o.qos, o.on_change, o.retain
        self.device = o.device_id or socket.gethostname() or "edgefer"
        self.buffer_size = o.buffer

        from .sinks import dumps  # imported here, not on the first frame (it loads OpenCV)

        self._dumps = dumps
        self._mqtt = mqtt
        self._cond = threading.Condition()
        self._buf: deque[tuple[str, bytes]] = deque()
        self._closing = False
        self._closed = False
        self._connected = False
        self._seq = 0
        self._in_hand = 0
        self._changes: OrderedDict[tuple[str, int], str] = OrderedDict()
        # counters (under self._cond)
        self.accepted = self.skipped_unchanged = 0
        self.dropped_full = self.dropped_at_close = 0
        self.sent = self.delivered = self.lost_on_disconnect = 0
        self.connects = self.disconnects = 0
        self.buffer_peak = 0
        self.last_error: str | None = None
        self._publish_ms_max = 0.0
        self._publish_ms_total = 0.0
        self._publish_calls = 0

        cid = o.client_id or f"edgefer-{topic_part(self.device)[:40]}-{uuid.uuid4().hex[:8]}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if o.tls:
            import ssl

            try:
                c.tls_set(ca_certs=o.ca_certs, certfile=o.certfile, keyfile=o.keyfile, cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as e:
                raise EdgeferError(f"--publish: cannot set up TLS: {e}") from None
            if o.tls_insecure:
                c.tls_insecure_set(True)
        c.reconnect_delay_set(o.reconnect_min_s, o.reconnect_max_s)
        c.connect_timeout = 5.0
        c.max_inflight_messages_set(min(MAX_PENDING, 65535))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_connect_fail = self._on_connect_fail
        self._client = c
        try:
            c.connect_async(host, int(port), keepalive=o.keepalive)
        except (ValueError, OSError) as e:
            raise EdgeferError(f"--publish: cannot connect to {self.target.url()}: {e}") from None
        c.loop_start()  # paho's network thread: connects, reconnects with backoff, writes, reads acks
        self._sender = threading.Thread(target=self._send_loop, name="edgefer-mqtt-send", daemon=True)
        self._sender.start()

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "MqttPublisher":
        """A publisher for ``mqtt[s]://[user[:pass]@]host[:port]/topic``; ``kw`` as for the constructor
        (options win over the URL's credentials, which win over the environment)."""
        t = parse_url(url)
        base = kw.pop("options", None) or MqttOptions()  # its unset fields take the URL's, like absent keywords
        if t.tls and "tls" not in kw and not base.tls:
            kw["tls"] = True
        if t.username is not None:
            if "username" not in kw and base.username is None:
                kw["username"] = t.username
            if t.password is not None and "password" not in kw and base.password is None:
                kw["password"] = t.password
        return cls(t.host, t.port, t.topic, base, **kw)

    def describe(self) -> str:
        auth = " (with credentials)" if self.target.username else ""
        return f"{self.target.url()}{auth}, QoS {self.qos}" + (", on change" if self.on_change else "")

    __repr__ = describe

    # ----------------------------------------------------------------------------- caller side

    def publish_frame(self, result: Any, stream: str | None = None) -> bool:
        """Publish one frame: a :class:`~edgefer.pipeline.FrameResult` or its ``to_event()`` dict.

        Returns True when a message was buffered, False when on_change found nothing new (or the
        publisher is closed). Never blocks on the network.
        """
        if hasattr(result, "to_event"):
            event = result.to_event()
            name = getattr(result, "name", "")
            if name and "file" not in event:
                event["file"] = name
        else:
            event = result
        return self.publish(event, stream=stream)

    def publish(self, event: dict[str, Any], stream: str | None = None) -> bool:
        """Buffer one event dict (the ``--events`` schema) for sending; see :meth:`publish_frame`."""
        t0 = time.perf_counter()
        dumps = self._dumps
        stream = "" if stream is None else str(stream)
        faces = event.get("faces") or []
        if self.on_change:
            faces = self._changed(stream, faces)
            if not faces:
                with self._cond:
                    self.skipped_unchanged += 1
                    self._timed(t0)
                return False
        msg = {"device": self.device, "stream": stream, "seq": 0, "ts": round(time.time(), 3),
               **{k: v for k, v in event.items() if k not in ("device", "stream", "seq", "ts")}, "faces": faces}
        topic = self.target.topic
        if "{" in topic:
            topic = topic.format(device=topic_part(self.device), stream=topic_part(stream))
        with self._cond:
            if self._closing:
                self._timed(t0)
                return False
            msg["seq"] = self._seq
            self._seq += 1
            payload = dumps(msg, separators=(",", ":")).encode("utf-8")
            if len(self._buf) >= self.buffer_size:
                self._buf.popleft()  # the oldest goes: after an outage the newest state arrives first
                self.dropped_full += 1
            self._buf.append((topic, payload))
            self.accepted += 1
            self.buffer_peak = max(self.buffer_peak, len(self._buf))
            self._cond.notify_all()
            self._timed(t0)
        return True

    def _timed(self, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1e3
        self._publish_calls += 1
        self._publish_ms_total += ms
        self._publish_ms_max = max(self._publish_ms_max, ms)

    def _changed(self, stream: str, faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The faces whose track is new or whose emotion changed (on_change mode)."""
        out = []
        with self._cond:
            for f in faces:
                key = (stream, int(f.get("track", -1)))
                emo = f.get("emotion")
                if self._changes.get(key) != emo:
                    out.append(f)
                self._changes[key] = emo
                self._changes.move_to_end(key)
            while len(self._changes) > ON_CHANGE_TRACKS:
                self._changes.popitem(last=False)
        return out

    # ----------------------------------------------------------------------------- network side

    def _pending(self) -> int:
        return self.sent - self.delivered - self.lost_on_disconnect

    def _send_loop(self) -> None:
        """Hand buffered messages to paho while connected, at most MAX_PENDING unconfirmed."""
        mqtt = self._mqtt
        while True:
            with self._cond:
                while not self._closed and not (self._buf and self._connected and self._pending() < MAX_PENDING):
                    self._cond.wait(0.25)
                if self._closed:
                    return
                topic, payload = self._buf.popleft()
                self._in_hand = 1  # neither buffered nor sent: flush() must still wait for it
            try:
                info = self._client.publish(topic, payload, qos=self.qos, retain=self.retain)
                rc = info.rc
            except (ValueError, RuntimeError) as e:  # a payload paho refuses: counted, never retried
                with self._cond:
                    self._in_hand = 0
                    self.dropped_full += 1
                    self.last_error = f"publish refused: {e}"
                continue
            with self._cond:
                self._in_hand = 0
                if rc == mqtt.MQTT_ERR_SUCCESS or (rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
                    self.sent += 1  # QoS 1/2 without a connection: paho keeps it and sends it on reconnect
                elif rc == mqtt.MQTT_ERR_NO_CONN:  # QoS 0 raced a disconnect: back to the front
                    self._connected = False
                    if len(self._buf) < self.buffer_size:
                        self._buf.appendleft((topic, payload))
                    else:
                        self.dropped_full += 1
                else:  # paho's queue is full: back to the front, retry shortly
                    if len(self._buf) < self.buffer_size:
                        self._buf.appendleft((topic, payload))
                    else:
                        self.dropped_full += 1
                    self._cond.wait(0.05)

    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        with self._cond:
            if getattr(reason_code, "is_failure", False):
                self.last_error = f"broker refused the connection: {reason_code}"
                self._connected = False
            else:
                self._connected = True
                self.connects += 1
            self._cond.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        with self._cond:
            self.last_error = f"cannot connect to {self.target.host}:{self.target.port}"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        with self._cond:
            was = self._connected
            if was:
                self.disconnects += 1
                if not self._closing:  # (a refused connection keeps its own reason as the error)
                    self.last_error = f"connection lost: {reason_code}"
            self._connected = False
            if self.qos == 0:  # QoS 0 messages paho had not written yet are gone with the connection
                self.lost_on_disconnect += self._pending()
            self._cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        with self._cond:
            self.delivered += 1
            self._cond.notify_all()

    # ----------------------------------------------------------------------------- ending

    def flush(self, timeout: float = 5.0, while_disconnected: bool = True) -> bool:
        """Wait until every buffered message is confirmed, up to ``timeout`` seconds; True when all were.

        ``while_disconnected=False`` gives up as soon as the broker is away (it still waits for the
        first connection to be tried): what :meth:`close` does, so a run ends promptly without a broker.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._buf or self._in_hand or self._pending() > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not while_disconnected and not self._connected and (self.connects or self.last_error):
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting, send what is buffered while connected (up to ``timeout`` seconds), then
        disconnect. Whatever is still buffered is counted as dropped; never hangs the caller longer
        than about ``timeout`` plus one second, whatever the broker does."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
        self.flush(timeout, while_disconnected=False)
        with self._cond:
            self._closed = True
            self.dropped_at_close += len(self._buf)
            self._buf.clear()
            self._cond.notify_all()
        self._sender.join(timeout=1.0)

        def stop() -> None:
            try:
                self._client.disconnect()
            finally:
                self._client.loop_stop()

        t = threading.Thread(target=stop, name="edgefer-mqtt-close", daemon=True)
        t.start()
        t.join(timeout=1.0 + self._client.connect_timeout)

    def __enter__(self) -> "MqttPublisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def summary_line(self) -> str:
        """One line for the run's printed summary (no credentials)."""
        r = self.report()
        line = (f"published {r['delivered']} of {r['accepted']} events to {r['url']} (QoS {r['qos']}): "
                f"{r['dropped']} dropped, {r['unconfirmed']} unconfirmed, {r['disconnects']} disconnects")
        if r["skipped_unchanged"]:
            line += f", {r['skipped_unchanged']} unchanged frames not sent"
        if r["connects"] == 0 and r["last_error"]:
            line += f"; never connected: {r['last_error']}"
        return line

    def report(self) -> dict[str, Any]:
        """What was published and lost, for the run summary (JSON-serialisable, no credentials)."""
        with self._cond:
            pending = max(0, self._pending())
            return {
                "url": self.target.url(),
                "qos": self.qos,
                "on_change": self.on_change,
                "device": self.device,
                "tls": self.target.tls,
                "auth": self.target.username is not None,
                "accepted": self.accepted,
                "skipped_unchanged": self.skipped_unchanged,
                "sent": self.sent,
                "delivered": self.delivered,
                "dropped": self.dropped_full + self.dropped_at_close,
                "dropped_buffer_full": self.dropped_full,
                "dropped_at_close": self.dropped_at_close,
                "unconfirmed": pending + self.lost_on_disconnect,
                "buffered": len(self._buf),
                "buffer_size": self.buffer_size,
                "buffer_peak": self.buffer_peak,
                "connected": self._connected,
                "connects": self.connects,
                "disconnects": self.disconnects,
                "publish_ms_mean": round(self._publish_ms_total / self._publish_calls, 4) if self._publish_calls else 0.0,
                "publish_ms_max": round(self._publish_ms_max, 4),
                "last_error": self.last_error,
            }
