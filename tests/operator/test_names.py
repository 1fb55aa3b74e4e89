from modelyard.operator import names


def test_service_name_replaces_dots():
    assert names.service_name("llama-3.2-1b") == "llama-3-2-1b"
    assert names.endpoint("llama-3.2-1b", "ai", 8083) == "http://llama-3-2-1b.ai.svc:8083"


def test_service_name_is_a_dns_1035_label():
    assert names.service_name("360m-model") == "m-360m-model"
    long = names.service_name("a" * 200)
    assert len(long) <= 63 and long.startswith("a")
    assert names.service_name("a" * 200) != names.service_name("a" * 201)


def test_job_name_fits_a_label_value_and_carries_the_hash():
    name = names.job_name("x" * 100, "0123456789")
    assert len(name) <= 63
    assert name.endswith("-fetch-0123456789")
    adapters = names.adapters_job_name("x" * 100, "0123456789")
    assert len(adapters) <= 63 and adapters.endswith("-adapters-0123456789")


def test_stable_hash_ignores_key_order():
    assert names.stable_hash({"a": 1, "b": 2}) == names.stable_hash({"b": 2, "a": 1})
