"""ConfigForm: a notebook form generated from any method's config class (no kernel or browser:
ipywidgets work in-process without a front end)."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal, Optional

import ipywidgets as W
import pytest
from pydantic import BaseModel, Field, model_validator

import slimkit
from slimkit.core.config import MethodConfig
from slimkit.core.errors import ConfigError
from slimkit.jupyter_ext.forms import FORM_LEVEL, ConfigForm

HOST = slimkit.make_host(load_entrypoints=False)
METHODS = [(family, info) for family in ("compressors", "scorers", "evaluators") for info in getattr(HOST, family)]


def config_of(name: str) -> type[MethodConfig]:
    return next(info.cls.Config for _, info in METHODS if info.name == name)


def message(form: ConfigForm, field: str) -> str:
    return form.fields[field].message.value


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, dict]] = []

    def __call__(self, form: ConfigForm) -> None:
        self.calls.append((form.valid, dict(form.errors)))


@pytest.mark.parametrize(("family", "info"), METHODS, ids=[f"{f}:{i.name}" for f, i in METHODS])
def test_every_installed_method_gets_a_valid_form_at_its_defaults(family, info):
    form = ConfigForm(info.cls.Config, title=info.name)
    assert form.valid, form.errors
    assert form.errors == {} and form.params() == {} and form.summary() == "defaults"
    assert form.config() == info.cls.Config()
    assert isinstance(form.widget, W.VBox) and "slimkit-config-form" in form.widget._dom_classes
    assert set(form.fields) == set(info.cls.Config.model_json_schema().get("properties", {}))
    for field in form.fields.values():
        assert isinstance(field.message, W.HTML) and field.message.value == ""
        assert "slimkit-field-error" in field.message._dom_classes
        assert field.box in form.widget.children


def test_widget_kinds_follow_the_schema():
    form = ConfigForm(config_of("prune.unstructured"))
    sparsity = form.fields["sparsity"].widget
    assert isinstance(sparsity, W.FloatSlider)  # [0, 1): the exclusive bound moves one step inside
    assert sparsity.min == 0.0 and 0.95 <= sparsity.max < 1.0 and sparsity.step == 0.01
    assert sparsity.value == 0.5 and sparsity.readout
    scope = form.fields["scope"].widget
    assert isinstance(scope, W.Dropdown) and [v for _, v in scope.options] == ["layer", "row", "global"]
    assert scope.value == "layer"
    assert isinstance(form.fields["sequential"].widget, W.Checkbox) and form.fields["sequential"].widget.value is True
    roles = form.fields["roles"].widget
    assert isinstance(roles, W.SelectMultiple) and set(roles.value) == {"q", "k", "v", "qkv", "o", "up", "gate", "down"}
    assert isinstance(form.fields["scorer"].widget, W.Text)
    assert isinstance(form.fields["scorer_params"].widget, W.Textarea)
    owl = form.fields["owl"].widget
    assert isinstance(owl, W.Textarea) and "outlier: 5.0" in owl.value and "spread: 0.08" in owl.value
    help_text = form.fields["sparsity"].box.children[1].value
    assert "Fraction of the weights" in help_text and "default: 0.5" in help_text
    assert sparsity.tooltip.startswith("Fraction of the weights")

    distill = ConfigForm(config_of("distill"))
    assert isinstance(distill.fields["grad_clip"].widget, W.FloatText)  # one bound: a text box
    assert isinstance(distill.fields["lr"].widget, W.FloatText)  # default 5e-5 fits no sensible slider grid
    assert isinstance(distill.fields["batch_size"].widget, W.IntSlider)
    assert isinstance(distill.fields["checkpoint_every"].widget, W.IntText)
    bits = ConfigForm(config_of("quantize.rtn")).fields["bits"].widget
    assert isinstance(bits, W.Dropdown) and [v for _, v in bits.options] == [2, 3, 4, 8] and bits.value == 4


def test_out_of_range_number_is_reported_next_to_its_field_not_clamped():
    form = ConfigForm(config_of("distill"))
    seen = Recorder()
    form.on_change(seen)
    grad_clip = form.fields["grad_clip"].widget
    grad_clip.value = -1.0
    assert grad_clip.value == -1.0
    assert not form.valid and "grad_clip" in form.errors
    assert "greater than 0" in message(form, "grad_clip") and message(form, "lr") == ""
    assert seen.calls[-1] == (False, form.errors)
    assert form.summary().startswith("invalid: grad_clip: Input should be greater than 0")
    with pytest.raises(ConfigError, match="grad_clip"):
        form.config()
    grad_clip.value = 0.5
    assert form.valid and message(form, "grad_clip") == "" and seen.calls[-1] == (True, {})
    assert form.params() == {"grad_clip": 0.5} and form.config().grad_clip == 0.5

    mi = ConfigForm(config_of("neurons.mi"))
    mi.fields["threshold"].widget.value = -0.5
    assert mi.fields["threshold"].widget.value == -0.5
    assert mi.errors == {"threshold": "Input should be greater than or equal to 0"}
    assert mi.summary() == "invalid: threshold: Input should be greater than or equal to 0"


def test_values_a_widget_cannot_show_are_kept_and_reported():
    form = ConfigForm(config_of("latency"))
    form.set_values({"seed": "abc", "repeats": 5})
    assert not form.valid and "valid integer" in message(form, "seed")
    assert form.params() == {"seed": "abc", "repeats": 5}
    form.fields["seed"].widget.value = 7  # the user types a number: the given text is gone
    assert form.valid and form.params() == {"seed": 7, "repeats": 5}

    pruning = ConfigForm(config_of("prune.unstructured"), {"sparsity": 1.5})
    assert pruning.fields["sparsity"].widget.value == 0.5  # the slider was not moved to its end
    assert "less than 1" in message(pruning, "sparsity") and not pruning.valid
    pruning.fields["sparsity"].widget.value = 0.7
    assert pruning.valid and pruning.params() == {"sparsity": 0.7} and pruning.summary() == "sparsity=0.7"


def test_yaml_textareas_parse_and_report_errors():
    form = ConfigForm(config_of("prune.unstructured"))
    seen = Recorder()
    form.on_change(seen)
    params = form.fields["scorer_params"].widget
    params.value = "alpha: [1, 2"
    assert not form.valid and seen.calls and seen.calls[-1][0] is False
    assert message(form, "scorer_params").startswith("<span") and "not valid YAML or JSON" in form.errors["scorer_params"]
    params.value = '{"alpha": 2}'
    assert form.valid and message(form, "scorer_params") == "" and form.params() == {"scorer_params": {"alpha": 2}}
    form.fields["owl"].widget.value = "outlier: 0.5\nspread: 0.1"
    assert form.errors == {"owl": "outlier: Input should be greater than 1"}
    form.fields["owl"].widget.value = "outlier: 3"
    assert form.valid and form.config().owl.outlier == 3 and form.config().owl.spread == 0.08
    form.fields["owl"].widget.value = ""  # empty: the default
    assert form.valid and "owl" not in form.params()


def test_model_level_errors_go_to_the_form_message():
    form = ConfigForm(config_of("prune.nm"))
    assert form.form_message.value == ""
    form.fields["n"].widget.value = 4
    assert not form.valid and set(form.errors) == {FORM_LEVEL}
    assert "n must be smaller than m" in form.form_message.value and "slimkit-form-error" in form.form_message._dom_classes
    assert message(form, "n") == "" and message(form, "m") == ""
    form.fields["m"].widget.value = 8
    assert form.valid and form.form_message.value == "" and form.params() == {"n": 4, "m": 8}


def test_unknown_parameters_from_a_recipe_are_reported():
    form = ConfigForm(config_of("prune.unstructured"), {"sparsity": 0.6, "sparsty": 0.7})
    assert not form.valid and form.errors == {FORM_LEVEL: "sparsty: unknown parameter"}
    form.set_values({"sparsity": 0.6})
    assert form.valid and form.params() == {"sparsity": 0.6}


def test_optional_fields_have_a_set_toggle():
    form = ConfigForm(config_of("prune.sparsegpt"))
    n, m = form.fields["n"], form.fields["m"]
    assert isinstance(n.widget, W.IntSlider) and isinstance(n.toggle, W.Checkbox)
    assert n.toggle.value is False and n.widget.disabled and form.config().n is None
    n.toggle.value = True
    assert not n.widget.disabled
    n.widget.value = 2
    assert not form.valid  # SparseGPT wants n and m together
    m.toggle.value = True
    m.widget.value = 4
    assert form.valid and form.params() == {"n": 2, "m": 4} and form.summary() == "n=2, m=4"
    n.toggle.value = False
    assert form.params() == {"m": 4}

    svd = ConfigForm(config_of("lowrank.svd"), {"rank": 8})
    assert svd.fields["rank"].toggle.value is True and svd.fields["rank"].widget.value == 8
    assert isinstance(svd.fields["rank"].widget, W.IntText) and svd.valid and svd.config().rank == 8


def test_params_hold_only_non_defaults_and_round_trip():
    form = ConfigForm(config_of("prune.unstructured"))
    form.fields["sparsity"].widget.value = 0.7
    form.fields["scope"].widget.value = "row"
    form.fields["sequential"].widget.value = False
    form.fields["roles"].widget.value = ("up", "q")
    form.fields["scope"].widget.value = "layer"  # back to its default: not a parameter any more
    params = form.params()
    assert params == {"sparsity": 0.7, "sequential": False, "roles": ["q", "up"]}
    assert form.summary() == 'roles=["q", "up"], sequential=false, sparsity=0.7'  # in the schema's order
    again = ConfigForm(config_of("prune.unstructured"), params)
    assert again.params() == params and again.config() == form.config()
    other = ConfigForm(config_of("prune.unstructured"))
    seen = Recorder()
    other.on_change(seen)
    other.set_values(params)
    assert other.params() == params and len(seen.calls) == 1  # one notification per set_values
    other.set_values({})
    assert other.params() == {} and other.fields["sparsity"].widget.value == 0.5
    other.on_change(seen, remove=True)
    other.fields["sparsity"].widget.value = 0.3
    assert len(seen.calls) == 2


class Window(BaseModel):
    size: int = Field(128, ge=8, description="Tokens per window.")
    overlap: float = 0.0


class ThirdPartyConfig(MethodConfig):
    """A plugin's parameters, written without any UI code."""

    mode: Literal["fast", "exact"] = Field("fast", description="Speed or precision.")
    limit: Optional[int] = Field(None, ge=1, description="Stop after this many items.")
    ratio: float = Field(0.25, gt=0.0, lt=0.5, description="Share to drop.")
    tags: list[str] = Field(default_factory=list, description="Free labels.")
    window: Window = Field(default_factory=Window)
    name: str

    @model_validator(mode="after")
    def _exact_needs_limit(self) -> "ThirdPartyConfig":
        if self.mode == "exact" and self.limit is None:
            raise ValueError("mode 'exact' needs a limit")
        return self


def test_a_third_party_config_gets_a_working_form():
    form = ConfigForm(ThirdPartyConfig, title="my.method")
    fields = form.fields
    assert isinstance(fields["mode"].widget, W.Dropdown)
    assert isinstance(fields["limit"].widget, W.IntText) and fields["limit"].toggle is not None
    ratio = fields["ratio"].widget
    assert isinstance(ratio, W.FloatSlider) and 0 < ratio.min < 0.25 < ratio.max < 0.5 and ratio.value == 0.25
    assert isinstance(fields["tags"].widget, W.TagsInput)
    assert isinstance(fields["window"].widget, W.Textarea) and "size: 128" in fields["window"].widget.value
    assert isinstance(fields["name"].widget, W.Text)
    assert "my.method" in form.widget.children[0].value and "without any UI code" in form.widget.children[1].value
    assert "(required)" in fields["name"].box.children[1].value

    assert form.valid and form.params() == {"name": ""}  # a required field is always a parameter
    fields["name"].widget.value = "run-1"
    fields["tags"].widget.value = ["a", "b"]
    fields["window"].widget.value = "size: 4"
    assert form.errors == {"window": "size: Input should be greater than or equal to 8"}
    fields["window"].widget.value = "size: 64\noverlap: 0.5"
    fields["mode"].widget.value = "exact"
    assert form.errors == {FORM_LEVEL: "mode 'exact' needs a limit"}
    assert "needs a limit" in form.form_message.value
    fields["limit"].toggle.value = True
    fields["limit"].widget.value = 10
    assert form.valid, form.errors
    config = form.config()
    assert isinstance(config, ThirdPartyConfig)
    assert (config.mode, config.limit, config.tags, config.window.size, config.name) == ("exact", 10, ["a", "b"], 64, "run-1")
    assert form.params() == {"mode": "exact", "limit": 10, "tags": ["a", "b"],
                             "window": {"size": 64, "overlap": 0.5}, "name": "run-1"}
    assert ConfigForm(ThirdPartyConfig, form.params()).config() == config


def test_forms_module_stays_light():
    code = "import sys, slimkit.jupyter_ext.forms; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_float_over_a_wide_range_gets_a_text_box_so_every_valid_value_can_be_entered():
    form = ConfigForm(slimkit.make_host(load_entrypoints=False).compressors.get("distill").cls.Config)
    temperature = form.fields["temperature"].widget  # (0, 100]: a slider would step by whole numbers
    assert isinstance(temperature, W.FloatText) and isinstance(form.fields["hidden_weight"].widget, W.FloatText)
    temperature.value = 0.5
    assert form.valid and form.params() == {"temperature": 0.5}
    temperature.value = 0
    assert "temperature" in form.errors and not form.valid
