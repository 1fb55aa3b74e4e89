"""Images in chat: OpenAI image_url parts (base64 data URIs) through a vlm's mmproj, by libmtmd.

The `vlm` model is a generated phi-3-vocabulary text model with a generated LLaVA-style
projector (modelgen.make_mmproj_gguf), uploaded through the registry with its mmproj part. The
weights are random, so answers are nonsense, but they are a function of the image: the
real vision encoder runs and its embeddings are decoded into the prompt.
"""
from __future__ import annotations

import base64
import ctypes
import struct
import threading

import httpx
import openai
import pytest

import modelgen
from conftest import AUTH, CTX
from modelyard.server.inference.chat_templates import format_chat
from modelyard.server.inference.images import ImageError, sniff
from modelyard.server.api.openai.schema import parse_chat

CLIP = modelgen.ClipShape()
N_IMAGE = (CLIP.image_size // CLIP.patch_size) ** 2  # prompt positions one image fills (16)
# phi-3's end-of-generation tokens (</s>, <|endoftext|>, <|end|>): always generate max_tokens
NO_EOS = {"2": -100, "32000": -100, "32007": -100}

RED = modelgen.make_png(32, 32, lambda x, y: (255, 0, 0))
STRIPES = modelgen.make_png(48, 40, lambda x, y: (0, 0, 255) if (x // 4) % 2 else (255, 255, 0))


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def ask(*urls: str, text: str = "What is in this picture?") -> list[dict]:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "system", "content": "You see images."}, {"role": "user", "content": parts}]


def answer(client, *urls: str, **kw):
    return client.chat.completions.create(model="vlm", messages=ask(*urls), max_tokens=12,
                                          temperature=0, logit_bias=NO_EOS, **kw)


@pytest.fixture(scope="module")
def text_reference(model_files):
    """llama-cpp-python's own Llama on the vlm's text model."""
    import llama_cpp

    return llama_cpp.Llama(str(model_files["vlm-text"]), n_ctx=CTX, n_threads=2, verbose=False)


def test_an_image_fills_its_positions_and_the_text_path_is_the_llms(client, text_reference):
    red = answer(client, uri(RED))
    two = answer(client, uri(RED), uri(STRIPES))
    text_only = answer(client)
    assert red.choices[0].message.content and red.usage.completion_tokens == 12
    # the marker's place in the text becomes exactly the image's positions, once per image
    assert red.usage.prompt_tokens == text_only.usage.prompt_tokens + N_IMAGE
    assert two.usage.prompt_tokens == text_only.usage.prompt_tokens + 2 * N_IMAGE
    # without images a vlm is its text model, as llama-cpp-python runs it
    ref = text_reference.create_chat_completion(
        messages=[{"role": "system", "content": "You see images."},
                  {"role": "user", "content": "What is in this picture?"}],
        temperature=0, max_tokens=12, logit_bias={int(t): b for t, b in NO_EOS.items()})
    assert text_only.choices[0].message.content == ref["choices"][0]["message"]["content"]
    assert text_only.usage.prompt_tokens == ref["usage"]["prompt_tokens"]


def test_streamed_image_chat_matches_plain(client):
    plain = answer(client, uri(STRIPES))
    chunks = list(answer(client, uri(STRIPES), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == 12


def test_the_answer_depends_on_the_image_and_reuse_never_crosses_images(client):
    red1 = answer(client, uri(RED))
    stripes = answer(client, uri(STRIPES))
    red2 = answer(client, uri(RED))
    red3 = answer(client, uri(RED))
    content = lambda r: r.choices[0].message.content  # noqa: E731
    # Same text, different pixels: a different answer. Had the prompt cache matched
    # red's image positions for the stripes, the stripes would have got red's answer.
    assert content(stripes) != content(red1)
    assert content(red2) == content(red1) == content(red3)
    # the stripes reused at most the text before the image, never red's image
    assert stripes.usage.prompt_tokens_details.cached_tokens < stripes.usage.prompt_tokens - N_IMAGE
    # the same image again reuses the whole prompt but its last token, the image included
    assert red3.usage.prompt_tokens_details.cached_tokens == red3.usage.prompt_tokens - 1


def test_a_real_jpeg_photo(client):
    photo = modelgen.sample_jpeg()
    r = answer(client, uri(photo, "image/jpeg"))
    text_only = answer(client)
    # resized by libmtmd to the projector's 32x32 input: the same 16 positions
    assert r.usage.prompt_tokens == text_only.usage.prompt_tokens + N_IMAGE
    assert r.choices[0].message.content != answer(client, uri(RED)).choices[0].message.content


def test_concurrent_image_chats_equal_the_same_chats_alone(client):
    urls = [uri(RED), uri(STRIPES), uri(modelgen.sample_jpeg(), "image/jpeg")]
    alone = [answer(client, u).choices[0].message.content for u in urls]
    out: dict[int, str] = {}

    def run(i):
        out[i] = answer(client, urls[i]).choices[0].message.content

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    # a text stream at the same time, so images are decoded while another slot generates
    text = client.chat.completions.create(model="vlm", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=30, temperature=0, logit_bias=NO_EOS)
    for t in threads:
        t.join(120)
    assert [out.get(i) for i in range(len(urls))] == alone
    assert text.usage.completion_tokens == 30


BIG_PNG = RED[:16] + struct.pack(">II", 20000, 20000) + RED[24:]  # only the header says so


@pytest.mark.parametrize("url, says", [
    (uri(b"hello, I am not an image"), "the data is not a PNG, JPEG, GIF or BMP image"),
    (uri(RED[:60]), "the PNG image (32x32) could not be decoded"),  # header intact, pixels cut
    (uri(BIG_PNG), "20000x20000 pixels; the limit is 8192 a side"),
    (uri(b"RIFF\x10\x00\x00\x00WEBPVP8 "), "WebP images are not supported"),
    ("data:image/png;base64,@@@@", "the image's base64 does not decode"),
    ("data:image/png,rawbytes", "image data URIs must be base64"),
    ("https://example.com/cat.png", "images must be data URIs"),
])
def test_a_bad_image_part_is_a_400_that_names_the_part(server, url, says):
    r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=60,
                   json={"model": "vlm", "messages": ask(uri(RED), url)})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["code"], err["type"]) == (400, "invalid_request_error")
    # messages[1] (after the system message), content[2] (after the text and the good image)
    assert err["message"].startswith("messages[1].content[2]: "), err["message"]
    assert says in err["message"]


def test_an_image_for_a_text_model_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="chat", messages=ask(uri(RED)), max_tokens=2)
    assert "Model 'chat' is of kind llm and takes no images" in e.value.message


def test_the_image_marker_typed_as_text(client):
    # with an image, a marker in the text would misplace it: refused, and said why
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="vlm", max_tokens=2,
                                       messages=ask(uri(RED), text="look: <__media__>"))
    assert "'<__media__>'" in e.value.message and "remove it" in e.value.message
    # without images it is only text
    r = client.chat.completions.create(model="vlm", max_tokens=2,
                                       messages=[{"role": "user", "content": "look: <__media__>"}])
    assert r.usage.completion_tokens >= 1


def test_a_projector_of_the_wrong_width_fails_to_load_and_says_why(client):
    # libmtmd checks that the projector's output width is the text model's n_embd
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="vlm-mismatch", messages=ask(uri(RED)), max_tokens=2)
    assert "Model 'vlm-mismatch' could not be loaded" in e.value.message
    assert "mismatch between text model (n_embd = 64) and mmproj (n_embd = 32)" in e.value.message


# ---- pure parts: where the image goes in the prompt, what its bytes are ---------------

JINJA = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def test_the_marker_stands_where_the_image_part_was_in_both_template_paths():
    req = parse_chat({"model": "vlm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "left "}, {"type": "image_url", "image_url": {"url": uri(RED)}},
        {"type": "text", "text": " right"}, {"type": "image_url", "image_url": uri(STRIPES)}]}]})
    assert [(i.data, i.where) for i in req.images] == [
        (RED, "messages[0].content[1]"), (STRIPES, "messages[0].content[3]")]
    # libmtmd replaces each marker, in order, by the next image's embeddings
    for hint, template in (("chatml", None), (None, JINJA)):
        prompt = format_chat(req.messages, hint=hint, gguf_template=template)
        assert "left <__media__> right<__media__>" in prompt.text, prompt.text



def _stbi_info(data: bytes) -> tuple[int, int] | None:
    from llama_cpp import mtmd_cpp

    info = mtmd_cpp._libmtmd.stbi_info_from_memory  # stb_image, as linked into libmtmd
    info.argtypes = [ctypes.c_char_p, ctypes.c_int] + [ctypes.POINTER(ctypes.c_int)] * 3
    x, y, c = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    return (x.value, y.value) if info(data, len(data), x, y, c) else None


def test_sniff_reads_sizes_as_stb_image_does():
    gif = b"GIF89a" + struct.pack("<HH", 7, 5) + b"\x00\x00\x00" + b";"
    bmp = b"BM" + b"\x00" * 16 + struct.pack("<ii", 9, -4) + b"\x00" * 30
    for data, fmt in ((RED, "PNG"), (STRIPES, "PNG"), (modelgen.sample_jpeg(), "JPEG"), (gif, "GIF")):
        assert sniff(data) == (fmt, *_stbi_info(data))
    assert sniff(bmp) == ("BMP", 9, 4)  # negative height: rows stored top-down
    for bad in (b"", b"\xff\xd8\xff\xe0\x00\x10JFIF", RED[:20], b"GIF89a\x01"):
        with pytest.raises(ImageError):
            sniff(bad)
