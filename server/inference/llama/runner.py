"""The runner: one GGUF model's engine in a process of its own (`python -m` this module).

The server starts one runner per loaded GGUF model and talks to it over a socket
(multiprocessing's Connection: pickled tuples). A native crash or hang in llama.cpp
then costs only this model's requests; the server notices, fails them with a clear
error and starts a new runner on the next request (remote.py is the server's side).

Messages from the server: ("gen", rid, prompt, params, max_tokens, logprobs, media refs, priority,
adapters),
("cancel", rid), ("embed", rid, inputs), ("vprompt", rid, text, add_special, images),
("close",). To the server: ("ready", info) or ("failed", message) once, then
("events", [(rid, event), ...], counters) after each scheduler step (Scheduler.counters), and the replies
("embedded", rid, vectors, error) and ("vprompt", rid, tokens, spans, error_kind, message).
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection

from modelyard.server.inference.events import FINAL, Failed

log = logging.getLogger("modelyard.runner")

# Image prompts encoded for requests not yet submitted; a conversation's n choices and a
# retry share one. Bounded: an entry is a few MB of embeddings at most.
MEDIA_KEEP = 64


class Link:
    """The runner's end of the socket: thread-safe sends, a step's events sent at once."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.lock = threading.Lock()
        self.pending: list = []

    def send(self, message) -> None:
        with self.lock:
            self.conn.send(message)

    def event(self, rid: int, event) -> None:
        with self.lock:
            self.pending.append((rid, event))

    def flush(self, counters: tuple) -> None:
        with self.lock:
            if self.pending:
                events, self.pending = self.pending, []
                self.conn.send(("events", events, counters))


class _Outbox:
    """A request's `out` queue on the runner's side: events go to the server in batches."""

    __slots__ = ("link", "rid", "requests")

    def __init__(self, link: Link, rid: int, requests: dict):
        self.link, self.rid, self.requests = link, rid, requests

    def put(self, event) -> None:
        if isinstance(event, FINAL):
            self.requests.pop(self.rid, None)
        self.link.event(self.rid, event)


def _serve(conn: Connection, spec: dict) -> None:
    import llama_cpp as L

    from modelyard.server.inference.images import ImageError
    from modelyard.server.inference.llama.model import LlamaModel
    from modelyard.server.inference.llama.scheduler import GenRequest, Scheduler

    link = Link(conn)
    kind, name = spec["kind"], spec["name"]
    model = LlamaModel(spec["path"], gpu_layers=spec["gpu_layers"])
    projector = None
    if kind == "embed":
        from modelyard.server.inference.llama.embedder import Embedder

        engine = Embedder(model, threads=spec["threads"], name=name, context=spec["context"])
        info = {"max_input": engine.max_input, "n_embd": engine.n_embd}
    else:
        if spec.get("mmproj"):
            from modelyard.server.inference.llama.projector import Projector

            projector = Projector(spec["mmproj"], model, threads=spec["threads"], use_gpu=spec["gpu_layers"] > 0)

        class StepScheduler(Scheduler):
            # Everything a step produced leaves in one message, with the step's counters.
            def _work(self):
                super()._work()
                link.flush(self.counters())

            def _shutdown(self):
                super()._shutdown()
                link.flush((0, 0, self.decoded["prompt"], self.decoded["generate"], 0, ((), ())))

        engine = StepScheduler(model, parallel=spec["parallel"], threads=spec["threads"],
                               context_per_slot=spec["context"], name=name, projector=projector,
                               kv_cache_type=spec.get("kv_cache_type"))
        info = {"n_ctx_slot": engine.n_ctx_slot, "kv_cells": engine.kv_cells, "slots": len(engine.slots),
                "kv_cache_type": engine.kv_cache_type,
                "kv_bytes_per_token": engine.kv_bytes_per_token}
    # What /metrics reports of the model: counted by llama.cpp from the loaded tensors.
    info["n_params"] = L.llama_model_n_params(model.ptr)
    conn.send(("ready", info))

    requests: dict[int, GenRequest] = {}
    media: collections.OrderedDict[int, tuple] = collections.OrderedDict()

    def embed(rid, inputs):
        try:
            link.send(("embedded", rid, engine.embed(inputs), None))
        except Exception as exc:
            link.send(("embedded", rid, None, str(exc)))

    def vprompt(rid, text, add_special, images):
        try:
            mm = projector.prompt(text, add_special, images)
        except ImageError as exc:
            link.send(("vprompt", rid, None, None, "image", str(exc)))
            return
        except Exception as exc:
            link.send(("vprompt", rid, None, None, "engine", str(exc)))
            return
        with link.lock:
            media[rid] = mm.media
            while len(media) > MEDIA_KEEP:
                media.popitem(last=False)
        link.send(("vprompt", rid, mm.tokens, [(s.start, s.n_tokens) for s in mm.media], None, None))

    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the server went away: so does its runner
        op = msg[0]
        if op == "gen":
            _, rid, prompt, params, max_tokens, logprobs, refs, priority, adapters = msg
            spans = ()
            if refs:
                with link.lock:
                    found = media.get(refs[0][0])
                if found is None:
                    link.event(rid, Failed("the request's images are no longer held; send it again"))
                    link.flush(engine.counters())
                    continue
                spans = tuple(found[i] for _, i in refs)
            req = GenRequest(prompt, params, max_tokens, logprobs, media=spans, priority=priority,
                             adapters=adapters, out=_Outbox(link, rid, requests))
            requests[rid] = req
            try:
                engine.submit(req)
            except Exception as exc:
                link.event(rid, Failed(str(exc)))
                link.flush(engine.counters())
        elif op == "cancel":
            req = requests.pop(msg[1], None)
            if req is not None:
                req.cancel.set()
        elif op == "embed":
            threading.Thread(target=embed, args=msg[1:], daemon=True).start()
        elif op == "vprompt":
            threading.Thread(target=vprompt, args=msg[1:], daemon=True).start()
        elif op == "close":
            break
    engine.close()
    if projector is not None:
        projector.close()
    model.close()


def main(argv: list[str]) -> int:
    # A terminal's Ctrl-C or a SIGTERM to the process group is for the server, which stops
    # its runners itself (or they see its end of the socket close): a runner that died of
    # the signal first would be taken for a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[runner {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    conn = Connection(int(argv[0]))
    spec = conn.recv()
    try:
        _serve(conn, spec)
    except Exception as exc:  # a load failure: the server says why in its 500
        log.exception("runner for %s failed", spec.get("name"))
        try:
            conn.send(("failed", str(exc) or type(exc).__name__))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
