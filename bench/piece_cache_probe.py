"""Where a worker's memory goes per request: the app in-process under Falcon's test client,
the soak's tiny model, OpenAI and Ollama chats (streamed and not), then tracemalloc's
biggest growths between two snapshots. With `prefill`, every token's piece is looked up
first, which separates the token-piece cache from anything else (docs/benchmarks.md#soak).

    .venv/bin/python bench/piece_cache_probe.py 300 [prefill]

Needs the soak's tiny model (`bench/soak.py --shape tiny` makes it once).
"""
import collections, gc, sys, tempfile
from pathlib import Path
import falcon.testing
from modelyard.server.settings import Settings
from modelyard.server.app import create_app
from modelyard.server.registry.store import Store

d = Path(tempfile.mkdtemp())
store = Store(d)
store.register_path("tiny", Path(__file__).resolve().parents[1] / ".cache/soak/tiny-phi3-f16.gguf", kind="llm",
                    fields={"gguf": {"chatTemplateHint": "chatml", "initContextSize": 512}})
app = create_app(Settings(store=d, threads=1, parallel=2), store)
c = falcon.testing.TestClient(app, headers={"Host": "127.0.0.1"})
msgs = lambda i: [{"role": "user", "content": f"hello {i}"}]

def run(n):
    for i in range(n):
        r = c.simulate_post("/v1/chat/completions", json={"model": "tiny", "messages": msgs(i), "max_tokens": 16,
                                                          "stream": i % 2 == 0})
        assert r.status_code == 200, r.text
        r = c.simulate_post("/api/chat", json={"model": "tiny", "messages": msgs(i), "stream": i % 2 == 0,
                                               "options": {"num_predict": 16}})
        assert r.status_code == 200, r.text

def census():
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())

import tracemalloc
run(40)
if len(sys.argv) > 2:  # fill every token's piece first: is the cache all that grows?
    from modelyard.server.inference.llama.model import LlamaModel
    for m in [o for o in gc.get_objects() if isinstance(o, LlamaModel)]:
        for t in range(m.n_vocab):
            m.piece(t)
tracemalloc.start(8)
gc.collect(); s1 = tracemalloc.take_snapshot()
run(int(sys.argv[1]))
gc.collect(); s2 = tracemalloc.take_snapshot()
for st in s2.compare_to(s1, "lineno")[:12]:
    print(st)
print("---")
for st in s2.compare_to(s1, "traceback")[:3]:
    print(st); print("\n".join(st.traceback.format()[-8:]))
