"""@app.cls without a server: what the decorator reads and refuses, instances and their
identity, with_options checks, and local calls."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import apothic
from apothic import App
from apothic._cls._identity import instance_key, keyed, params_json
from apothic._contracts import make_deployment


def make(app: App, **options):  # noqa: ANN201 - a Cls
    @app.cls(**options)
    class Model:
        size: str = apothic.parameter(default="small")
        layers: int = apothic.parameter(default=2)

        @apothic.enter()
        def load(self) -> None:
            self.loaded = getattr(self, "loaded", 0) + 1

        @apothic.method()
        def predict(self, x: int) -> tuple[str, int, int]:
            return self.size, self.layers, x

        @apothic.method()
        async def apredict(self, x: int) -> int:
            return x

        @apothic.method()
        def stream(self, n: int):  # noqa: ANN201
            yield from range(n)

        @apothic.exit()
        def close(self) -> None:
            pass

    return Model


def test_the_class_deploys_as_one_function_with_its_methods_and_parameters() -> None:
    app = App("cls-spec")
    Model = make(app, timeout_s=30)
    (fn,) = app._deploy_request().functions
    spec = fn.spec
    assert spec.name == "Model" and spec.timeout_s == 30
    assert [(m.name, m.is_async, m.is_generator) for m in spec.cls.methods] == [
        ("predict", False, False), ("apredict", True, False), ("stream", False, True)]
    assert [(p.name, p.type, p.required, p.default) for p in spec.cls.parameters] == [
        ("size", "str", False, '"small"'), ("layers", "int", False, "2")]
    assert (spec.cls.enter, spec.cls.exit) == (["load"], ["close"])
    assert not spec.is_async and not spec.is_generator
    assert Model.function_name == "Model"


def test_local_calls_run_enter_once_per_instance() -> None:
    Model = make(App("cls-local"))
    model = Model(size="large")
    assert model.predict.local(1) == ("large", 2, 1)
    assert model.predict(2) == ("large", 2, 2)
    assert model._local_object().loaded == 1
    assert asyncio.run(model.apredict.local(3)) == 3
    assert list(model.stream.local(3)) == [0, 1, 2]


def test_instance_parameters_are_checked_when_made() -> None:
    Model = make(App("cls-params"))
    with pytest.raises(apothic.InvalidError, match=r"size = 3: an int is not a str; allowed: a str"):
        Model(size=3)
    with pytest.raises(apothic.InvalidError, match=r"layers = True: a bool is not an int"):
        Model(layers=True)
    with pytest.raises(apothic.InvalidError, match=r"sise = 'x': unknown parameter.*did you mean 'size'"):
        Model(sise="x")
    with pytest.raises(apothic.InvalidError, match=r"passed by name.*Model\(size='large'\)"):
        Model("large")
    with pytest.raises(AttributeError, match=r"no method 'guess'.*\['apredict', 'predict', 'stream'\]"):
        Model().guess  # noqa: B018


def test_an_instance_is_its_parameters_and_overrides() -> None:
    Model = make(App("cls-identity"))
    spec = Model.deploy_spec(App("x")._spec(Model))
    params = spec.cls.parameters
    one = params_json(params, {"size": "a", "layers": 2})
    assert one == params_json(params, {"layers": 2, "size": "a"})
    assert instance_key(one, {}) == instance_key(one, {})
    assert instance_key(one, {}) != instance_key(params_json(params, {"size": "b", "layers": 2}), {})
    assert instance_key(one, {}) != instance_key(one, {"timeout_s": 5})
    assert instance_key("", {}) == ""
    dep = make_deployment("app", spec, 3, 300.0, 60.0)
    key = instance_key(one, {})
    mine = keyed(dep, key, one)
    assert mine.task_queue == f"apothic:app:Model:v3:{key}" and mine.fleet_id == f"apothic-fleet:app:Model:v3:{key}"
    assert keyed(dep, "", "").task_queue == "apothic:app:Model:v3"
    from apothic._cls._identity import fleet_of_queue

    assert fleet_of_queue(mine.task_queue) == mine.fleet_id
    assert fleet_of_queue(dep.task_queue) == ""


def test_with_options_is_checked_like_the_decorator() -> None:
    Model = make(App("cls-options"), gpu="RTX_4090", max_retries=2)
    faster = Model.with_options(timeout_s=5, max_containers=3)
    base = App("x")._spec(Model)
    fields = faster._fields(base)
    assert fields == {"timeout_s": 5, "max_containers": 3}
    assert Model._fields(base) == {}
    retried = Model.with_options(retries=apothic.Retries(max_retries=4))  # replaces max_retries=2
    assert retried._fields(base)["retry"].max_retries == 4
    assert Model.with_options(gpu=None)._fields(dataclasses.replace(base, placement={"gpu": "RTX_4090"})) == {
        "placement": None}
    with pytest.raises(apothic.InvalidError, match=r"(?s)Model.with_options\(...\): 1 problem.*timeout_s = 0"):
        Model.with_options(timeout_s=0)
    with pytest.raises(apothic.InvalidError, match=r"unknown option\(s\) 'timeout' \(did you mean 'timeout_s'\?\)"):
        Model.with_options(timeout=5)
    with pytest.raises(apothic.InvalidError, match="image cannot be overridden per instance"):
        Model.with_options(image=apothic.Image.debian_slim())
    with pytest.raises(apothic.InvalidError, match="gpu = 'RTX_9999'"):
        Model.with_options(gpu="RTX_9999")
    with pytest.raises(apothic.InvalidError, match="gpu = 'RTX_9999'"):
        apothic.Cls.from_name("some-app", "Model").with_options(gpu="RTX_9999")


def decorate(body: dict, app: App | None = None, **options):  # noqa: ANN201
    return (app or App("cls-errors")).cls(**options)(type("Model", (), body))


def method_body() -> dict:
    @apothic.method()
    def predict(self, x):  # noqa: ANN001, ANN202
        return x

    return {"predict": predict}


def test_a_class_without_methods_is_refused_with_the_fix() -> None:
    with pytest.raises(apothic.InvalidError, match=r"no method to call.*Fix: mark the methods callers call:\n"
                                                   r"    @apothic.method\(\)\n    def predict"):
        decorate({"helper": lambda self: 1})


def test_decoration_errors_name_the_place_and_the_fix() -> None:
    app = App("cls-errors")
    with pytest.raises(apothic.InvalidError, match=r"without parentheses.*`@app.cls\(\)`"):
        app.cls(type("Model", (), method_body()))
    with pytest.raises(apothic.InvalidError, match=r"unknown option\(s\) 'gpus' \(did you mean 'gpu'\?\)"):
        app.cls(gpus="RTX_4090")
    with pytest.raises(apothic.InvalidError, match=r"decorates a class, got a function: use @app.function"):
        app.cls()(lambda: 1)
    with pytest.raises(apothic.InvalidError, match=r"without parentheses on 'f'.*`@apothic.method\(\)`"):
        def f(self):  # noqa: ANN001, ANN202
            return 1
        apothic.method(f)

    def init(self, size):  # noqa: ANN001, ANN202
        self.size = size

    with pytest.raises(apothic.InvalidError, match=r"Model.__init__.*apothic.parameter.*@apothic.enter\(\)"):
        decorate({**method_body(), "__init__": init})
    with pytest.raises(apothic.InvalidError, match=r"Model.size = 'no annotation'.*str, int, float, bool or bytes"):
        decorate({**method_body(), "size": apothic.parameter()})
    with pytest.raises(apothic.InvalidError, match=r"Model.size = 'list'.*annotation of str"):
        decorate({**method_body(), "size": apothic.parameter(), "__annotations__": {"size": list}})
    with pytest.raises(apothic.InvalidError, match=r"Model.size default = 3: an int is not a str"):
        decorate({**method_body(), "size": apothic.parameter(default=3), "__annotations__": {"size": "str"}})

    def load(self, path):  # noqa: ANN001, ANN202
        pass

    with pytest.raises(apothic.InvalidError, match=r"Model.load = .def load\(self, path\).: @apothic.enter\(\) is called with no arguments; allowed: a method that takes only self"):
        decorate({**method_body(), "load": apothic.enter()(load)})
    with pytest.raises(apothic.InvalidError, match=r"schedule = .*Fix: schedule an @app.function"):
        decorate(method_body(), schedule=apothic.Period(minutes=5))
    with pytest.raises(apothic.InvalidError, match=r"liv = .*Fix: drop liv=..."):
        decorate(method_body(), liv={"model": "some-model"})
    # Every problem at once, the options' with the class's.
    with pytest.raises(apothic.InvalidError, match=r"(?s)2 problem\(s\).*no method to call.*timeout_s = -1"):
        decorate({}, timeout_s=-1)


def test_marks_in_the_wrong_place() -> None:
    def run(self):  # noqa: ANN001, ANN202
        pass

    twice = apothic.enter()(run)
    with pytest.raises(apothic.InvalidError, match=r"already @apothic.enter\(\).*keep one mark"):
        apothic.method()(twice)
    with pytest.raises(apothic.InvalidError, match=r"on a staticmethod.*drop @staticmethod"):
        apothic.method()(staticmethod(lambda: 1))

    @apothic.concurrent(max_inputs=4)
    def conc(self, x):  # noqa: ANN001, ANN202
        return x

    with pytest.raises(apothic.InvalidError, match=r"@apothic.concurrent on Model.conc.*on the class, under @app.cls"):
        decorate({"conc": apothic.method()(conc)})

    @apothic.batched(max_batch_size=4, wait_ms=10)
    def batch(self, xs: list = ()) -> list:  # noqa: ANN001 - the mark counts self as its one parameter
        return list(xs)

    with pytest.raises(apothic.NotSupportedError, match="batched methods: not supported yet"):
        decorate({"batch": apothic.method()(batch)})
    app = App("cls-order")
    Model = decorate(method_body(), app)
    with pytest.raises(apothic.InvalidError, match=r"placed above @app.cls\(...\) on 'Model'"):
        apothic.concurrent(max_inputs=2)(Model)
    with pytest.raises(apothic.InvalidError, match="already has a function or class named 'Model'"):
        decorate(method_body(), app)


def test_a_concurrent_class_takes_several_inputs_at_once() -> None:
    app = App("cls-conc")

    @app.cls()
    @apothic.concurrent(max_inputs=8, target_inputs=4)
    class Service:
        @apothic.method()
        async def ping(self) -> str:
            return "pong"

    spec = Service.deploy_spec(app._spec(Service))
    assert (spec.concurrent_requests, spec.target_inputs, spec.is_async) == (8, 4, True)
    with pytest.raises(apothic.InvalidError, match="concurrent_requests"):
        @app.cls(concurrent_requests=2)
        @apothic.concurrent(max_inputs=8)
        class Twice:
            @apothic.method()
            def ping(self) -> str:
                return "pong"


def test_from_name_checks_names_without_io() -> None:
    with pytest.raises(apothic.InvalidError, match="class name 'no good' is invalid"):
        apothic.Cls.from_name("app", "no good")
    with pytest.raises(apothic.InvalidError, match="not both"):
        apothic.Cls.from_name("app", "Model", client=apothic.ControlPlaneClient(), base_url="127.0.0.1:1")
    found = apothic.Cls.from_name("app", "Model")
    with pytest.raises(apothic.InvalidError, match="looked up by name.*its code is not in this process"):
        found().predict.local(1)
    assert repr(found(size="x").predict) == "<apothic.Method app.Model.predict of <apothic.Cls app.Model(size='x')>>"
