"""One editor for every diffusers pipeline that takes an ``image`` and a ``prompt``: InstructPix2Pix,
FLUX.1 Kontext, Qwen-Image-Edit and the like are profiles in ``resources/editors.yaml``, not code."""

from __future__ import annotations

import difflib
import gc
import inspect
import logging
import string
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image
from pydantic import Field

from sp_assets.backends.base import Editor, check_edit_args
from sp_assets.core.record_types import EditResult, Instruction, ModelInfo
from sp_assets.backends.common.hf import (
    HFParams,
    MissingWeightsError,
    ModelSource,
    free_cuda_cache,
    resolve_device,
    resolve_dtype,
)
from sp_assets.backends.common.versions import package_version
from sp_assets.backends.editors.diffusers_sizes import (
    QWEN_EDIT,
    QWEN_EDIT_PLUS,
    RULES,
    SizePlan,
    check_size_args,
    pipeline_multiple,
    plan_size,
)
from sp_assets.backends.profiles import ProfileError

log = logging.getLogger(__name__)

DEFAULT_PROMPT_TEMPLATE = "{text} {keep}"
PROMPT_FIELDS = ("text", "keep", "replacement", "original")
KNOWN_EDIT_PIPELINES = (
    "StableDiffusionInstructPix2PixPipeline", "StableDiffusionXLInstructPix2PixPipeline",
    "FluxKontextPipeline", "QwenImageEditPipeline", "QwenImageEditPlusPipeline",
)
# Pipelines that take one candidate per call. QwenImageEditPipeline expects a single image: given a
# list, its resize step passes the list through and the vision encoder reads each source at full size
# (several times the vision tokens of its ~1 MP copy). QwenImageEditPlusPipeline reads an image list
# as several references for ONE edit, and refuses batch_size > 1.
ONE_CANDIDATE_PER_CALL = frozenset({QWEN_EDIT, QWEN_EDIT_PLUS})
# Arguments the editor sets itself; a profile may not override them through extra_call_args.
RESERVED_CALL_ARGS = frozenset({
    "prompt", "image", "generator", "num_images_per_prompt", "output_type", "return_dict", "latents",
    "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
    "prompt_embeds_mask", "negative_prompt_embeds_mask", "callback", "callback_steps",
    "callback_on_step_end", "callback_on_step_end_tensor_inputs",
})
PROFILE_PARAM_FOR = {
    "num_inference_steps": "steps", "guidance_scale": "guidance_scale",
    "image_guidance_scale": "image_guidance_scale", "negative_prompt": "negative_prompt",
}
SAFETY_NOTE = ("disabled on purpose (disable_safety_checker: true): the safety research needs the raw "
               "model output, which the checker would black out")


def accepted_call_args(call: Callable[..., Any], args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Split ``args`` into those ``call`` names as parameters and those it does not.

    Values that are None mean "not set" and are left out of both. A ``**kwargs`` catch-all does
    not count as accepting a name: pipelines use it for deprecated arguments and ignore the rest.
    """
    params = inspect.signature(call).parameters
    named = {n for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    passed = {k: v for k, v in args.items() if v is not None and k in named}
    dropped = sorted(k for k, v in args.items() if v is not None and k not in named)
    return passed, dropped


def call_defaults(call: Callable[..., Any]) -> dict[str, Any]:
    """The default value of each named parameter of ``call`` that has one."""
    return {n: p.default for n, p in inspect.signature(call).parameters.items()
            if p.default is not inspect.Parameter.empty}


def takes_image_and_prompt(cls: type) -> bool:
    try:
        params = inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return False
    return "image" in params and "prompt" in params


def _diffusers_pipeline_names() -> list[str]:
    import diffusers

    return sorted(n for n in dir(diffusers) if n.endswith("Pipeline") or n.startswith("AutoPipeline"))


def _unknown_pipeline(profile_name: str, name: str, why: str) -> ProfileError:
    import diffusers

    close = difflib.get_close_matches(name, _diffusers_pipeline_names(), n=4, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ProfileError(
        f"editor profile {profile_name!r}: pipeline {name!r} {why} (diffusers {diffusers.__version__}).{hint} "
        f"Fix: set params.pipeline to a diffusers class whose __call__ takes 'image' and 'prompt' "
        f"(for example {', '.join(KNOWN_EDIT_PIPELINES)}), or to 'auto' to use the class named in the "
        f"model's model_index.json; a pipeline added after diffusers {diffusers.__version__} needs a newer "
        f"diffusers."
    )


def pipeline_class(profile_name: str, name: str) -> type | None:
    """The diffusers class a profile names, validated; None for 'auto' (decided from the model)."""
    import diffusers

    if name in ("auto", "DiffusionPipeline"):
        return None
    if not name or not name.isidentifier():
        raise _unknown_pipeline(profile_name, str(name), "is not a class name")
    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type):
        raise _unknown_pipeline(profile_name, name, "is not a class in diffusers")
    if name == "AutoPipelineForImage2Image":
        return cls
    if not (issubclass(cls, diffusers.DiffusionPipeline) and hasattr(cls, "from_pretrained")):
        raise _unknown_pipeline(profile_name, name, "is not a pipeline class")
    if not takes_image_and_prompt(cls):
        raise _unknown_pipeline(profile_name, name, "does not take both 'image' and 'prompt', so it cannot edit")
    return cls


def scheduler_class(profile_name: str, name: str) -> type:
    import diffusers

    cls = getattr(diffusers, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        close = difflib.get_close_matches(name, [n for n in dir(diffusers) if n.endswith("Scheduler")], n=4)
        raise ProfileError(
            f"editor profile {profile_name!r}: scheduler {name!r} is not a scheduler class in diffusers "
            f"{diffusers.__version__}.{' Did you mean ' + ', '.join(close) + '?' if close else ''} Fix: name a "
            f"diffusers scheduler class (e.g. EulerAncestralDiscreteScheduler) or leave 'scheduler' out to keep "
            f"the model's own."
        )
    return cls


class DiffusersEditor(Editor):
    """Drive any diffusers image-and-prompt pipeline as an ``Editor``.

    Any image-and-prompt pipeline in diffusers is a profile in ``resources/editors.yaml``::

        my_editor:
          implementation: diffusers
          params:
            pipeline: FluxKontextPipeline      # a class name in diffusers, or 'auto'
            model: black-forest-labs/FLUX.1-Kontext-dev   # hub id (read from the local cache) or a folder
            steps: 28
            guidance_scale: 2.5

    Loading follows the shared rules in ``sp_assets.backends.common.hf``: local folder or local Hugging
    Face cache only (unless ``allow_download: true``), safetensors only, no remote code. A missing model
    is a ``MissingWeightsError`` naming the profile, the model and the ``hf download`` command.

    Editors change size (Qwen-Image-Edit works near one megapixel, Kontext snaps to its preferred
    resolutions). Each source gets a size plan (``diffusers_sizes``): the pipeline is asked to draw at
    the size it reads the source at (Kontext: its preferred resolution for the source's aspect, not its
    default square 1024x1024), the source is resampled at most once before the pipeline sees it, and the
    rule, the sizes and the height/width asked are recorded in every result's ``detail``. Every output
    is brought back to its source's size with a LANCZOS resize, and the size the pipeline returned is
    kept in ``EditResult.raw_size``. ``EditResult.region`` is None: a diffusion
    editor may touch any pixel, so the verifier derives the changed region from a difference map.

    Pipelines with a built-in NSFW safety checker (the Stable Diffusion family, InstructPix2Pix) have it
    switched off by default (``disable_safety_checker: true``): it blacks out images it flags, and this
    project studies exactly those images, so it needs the raw output. That choice is recorded in
    ``config()`` and in every result's ``detail``.

    Parameters (all from the profile's ``params``):
      pipeline: a diffusers class name, 'auto' (the class in the model's model_index.json; a
          text-to-image model becomes its image-to-image pipeline) or 'AutoPipelineForImage2Image'.
      model, revision, variant: hub id (local cache) or folder; revision pins a hub commit; variant
          picks e.g. 'fp16' weight files.
      dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'float16' or 'bfloat16'.
      device: 'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'...
      steps, guidance_scale, image_guidance_scale, negative_prompt: None leaves the pipeline's
          default. A value the pipeline's __call__ does not accept is not passed, and is listed in
          config()['ignored_params'].
      extra_call_args: more __call__ arguments (true_cfg_scale, strength, Kontext's _auto_resize...); a
          name the pipeline does not accept is an error, and so are the size arguments the size rule
          sets (height, width; Kontext's max_area).
      batch_size: candidates per pipeline call; only candidates with the same size plan share a call
          (Qwen-Image-Edit and -Plus always take one per call).
      cpu_offload: enable_model_cpu_offload on CUDA (less GPU memory, slower); ignored on CPU.
      allow_download: let diffusers fetch missing files from the hub (off by default).
      disable_safety_checker: switch off a built-in NSFW checker (default on; recorded).
      resolution, max_side, multiple_of: the size to edit at (see ``diffusers_sizes.target_size``; the
          multiple is at least the pipeline's own). Unset: the pipeline's own size rule. Kontext with a
          size set reads and draws at it (auto-resize off); Qwen draws at it but always reads the
          reference near one megapixel. Outputs always come back at the source size.
      scheduler: a diffusers scheduler class name to use instead of the model's (built from the
          model's scheduler config); unset keeps the model's.
      prompt_template: builds the prompt from the instruction; fields {text}, {keep},
          {replacement}, {original} (the last two from the instruction's target, '' when absent).

    Reproducibility: each candidate has its own CPU ``torch.Generator`` seeded with its seed, so the
    same (image, instruction, seed, batch) gives the same bytes on the same hardware and software.
    Candidates that share a call can still nudge each other's results at the floating-point level.
    """

    class Params(HFParams):
        pipeline: str = "auto"
        variant: str | None = None
        steps: int | None = Field(None, ge=1)
        guidance_scale: float | None = None
        image_guidance_scale: float | None = None
        negative_prompt: str | None = None
        extra_call_args: dict[str, Any] | None = None
        batch_size: int = Field(1, ge=1)
        cpu_offload: bool = False
        disable_safety_checker: bool = True
        resolution: int | None = Field(None, ge=1)
        max_side: int | None = Field(None, ge=1)
        multiple_of: int = Field(16, ge=1)
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE
        scheduler: str | None = None

    def __init__(
        self,
        profile_name: str = "diffusers",
        *,
        model: str,
        pipeline: str = "auto",
        revision: str | None = None,
        variant: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        extra_call_args: dict[str, Any] | None = None,
        batch_size: int = 1,
        cpu_offload: bool = False,
        allow_download: bool = False,
        disable_safety_checker: bool = True,
        resolution: int | None = None,
        max_side: int | None = None,
        multiple_of: int = 16,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        scheduler: str | None = None,
    ) -> None:
        self.profile_name = profile_name
        self.model = str(model)
        self.pipeline_name = str(pipeline)
        self.revision = str(revision) if revision else None
        self.variant = str(variant) if variant else None
        self.batch_size = int(batch_size)
        self.allow_download = bool(allow_download)
        self.disable_safety_checker = bool(disable_safety_checker)
        self.resolution = int(resolution) if resolution else None
        self.max_side = int(max_side) if max_side else None
        self.multiple_of = int(multiple_of)
        self.prompt_template = self._check_template(prompt_template)
        self.negative_prompt = negative_prompt
        self.scheduler_override = scheduler or ""
        extra = dict(extra_call_args or {})

        cls = pipeline_class(profile_name, self.pipeline_name)  # before any loading: fail fast
        scheduler_cls = scheduler_class(profile_name, scheduler) if scheduler else None
        self.pipeline_cls_name = cls.__name__ if cls is not None else self.pipeline_name
        self.device = resolve_device(device)
        self.torch_dtype = resolve_dtype(dtype, self.device)
        self.dtype_name = str(self.torch_dtype).removeprefix("torch.")
        self.source = ModelSource(self.model, self.revision, self.allow_download)
        if cls is None or self.pipeline_name == "AutoPipelineForImage2Image":
            cls = self._class_from_model(cls is not None)
        self.pipeline_cls: type = cls
        self._check_extra(extra)
        check_size_args(profile_name, cls.__name__, extra, self.resolution, self.max_side)

        self.pipe = self._load_pipeline(scheduler_cls, bool(cpu_offload))
        self._set_call_args(extra, {"num_inference_steps": steps, "guidance_scale": guidance_scale,
                                    "image_guidance_scale": image_guidance_scale, "negative_prompt": negative_prompt})
        self.resolved_commit = self._resolved_commit()
        self.info = self._model_info()

    # -- construction steps: pipeline loaded, call arguments fixed ------------------------

    def _load_pipeline(self, scheduler_cls: type | None, cpu_offload: bool) -> Any:
        """Load the pipeline once, from local safetensors files, and put it on its device."""
        cls = self.pipeline_cls
        init_params = inspect.signature(cls.__init__).parameters
        self.has_safety_checker = "safety_checker" in init_params
        load_kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "trust_remote_code": False}
        if self.variant:
            load_kwargs["variant"] = self.variant
        if self.has_safety_checker and self.disable_safety_checker:
            load_kwargs["safety_checker"] = None
            if "feature_extractor" in init_params:  # only the checker reads it
                load_kwargs["feature_extractor"] = None
            if "requires_safety_checker" in init_params:
                load_kwargs["requires_safety_checker"] = False
        try:
            pipe = self._load(cls.from_pretrained, **load_kwargs)
        except OSError as exc:  # files present but incomplete, or not as safetensors
            raise MissingWeightsError(
                f"profile {self.profile_name!r}: could not load {self.model!r}"
                f"{' at revision ' + self.revision if self.revision else ''} as {cls.__name__} from local "
                f"safetensors files: {exc} Fix: {self._fix_hint()}. SafetyPairs loads safetensors "
                f"weights only (no pickled .bin files) and never downloads unless the profile sets "
                f"allow_download: true."
            ) from None
        pipe.set_progress_bar_config(disable=True)
        if scheduler_cls is not None:  # same config, another sampler (as model cards often do)
            pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        self.cpu_offload = cpu_offload and self.device.startswith("cuda")
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self.safety_checker_disabled = bool(self.has_safety_checker and self.disable_safety_checker)
        if self.safety_checker_disabled:
            self.safety_checker = "disabled"
        elif getattr(pipe, "safety_checker", None) is not None:
            self.safety_checker = "enabled"
        else:
            self.safety_checker = "absent"  # the pipeline or the saved model has none
        return pipe

    def _set_call_args(self, extra: dict[str, Any], wanted: dict[str, Any]) -> None:
        """What every call passes: the profile's values the pipeline accepts, plus ``extra_call_args``.

        Also records the values in effect (explicit or the pipeline's defaults) and what was ignored.
        """
        call = type(self.pipe).__call__
        passed, dropped = accepted_call_args(call, wanted)
        self.ignored_params = [PROFILE_PARAM_FOR[k] for k in dropped]
        if self.ignored_params:
            log.warning("editor profile %r: %s does not accept %s; not passed", self.profile_name,
                        type(self.pipe).__name__, ", ".join(self.ignored_params))
        self._negative = passed.pop("negative_prompt", None)
        self._call_args = {**passed, **extra}
        if "output_type" in inspect.signature(call).parameters:
            self._call_args["output_type"] = "pil"
        defaults = call_defaults(call)
        self.effective = {
            "steps": passed.get("num_inference_steps", defaults.get("num_inference_steps")),
            "guidance_scale": passed.get("guidance_scale", defaults.get("guidance_scale")),
            "image_guidance_scale": passed.get("image_guidance_scale", defaults.get("image_guidance_scale")),
        }
        self.extra_call_args = extra
        self.one_per_call = type(self.pipe).__name__ in ONE_CANDIDATE_PER_CALL
        self.pipe_multiple = pipeline_multiple(self.pipe)

    def _model_info(self) -> ModelInfo:
        import diffusers
        import torch

        return ModelInfo(
            model_id=self.model,
            revision=self.revision or self.resolved_commit,
            device=self.device,
            dtype=self.dtype_name,
            library=(f"diffusers {diffusers.__version__}; torch {torch.__version__}; "
                     f"transformers {package_version('transformers')}"),
        )

    # -- construction helpers ---------------------------------------------------------------

    def _check_template(self, template: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ProfileError(f"editor profile {self.profile_name!r}: prompt_template {template!r} is not a "
                               f"valid format string: {exc}") from exc
        unknown = sorted(fields - set(PROMPT_FIELDS))
        if unknown or "text" not in fields:
            raise ProfileError(
                f"editor profile {self.profile_name!r}: prompt_template {template!r} "
                + (f"uses unknown fields {unknown}" if unknown else "does not use {text}")
                + f"; fields are {', '.join('{' + f + '}' for f in PROMPT_FIELDS)} and {{text}} is required."
            )
        return template

    def _load(self, loader: Callable[..., Any], weights: bool = True, **kwargs: Any) -> Any:
        """``ModelSource.load``; for a folder, the error also says how to fill it from the hub."""
        try:
            return self.source.load(self.profile_name, loader, weights=weights, **kwargs)
        except MissingWeightsError as exc:
            if "hf download" in str(exc):
                raise
            raise MissingWeightsError(f"{exc} {self._local_dir_hint()}.") from None

    def _local_dir_hint(self) -> str:
        return (f"To fill that folder from the hub: hf download <repo-id> --local-dir {self.source.path_or_id} "
                f"(a diffusers repo with a model_index.json, for the pipeline {self.pipeline_cls_name})")

    def _fix_hint(self) -> str:
        hint = self.source.fetch_hint()
        return f"{hint}. {self._local_dir_hint()}" if self.source.is_local_path else hint

    def _class_from_model(self, img2img_only: bool) -> type:
        """'auto': the class in the model's model_index.json, or its image-to-image sibling."""
        import diffusers
        from diffusers import DiffusionPipeline

        cfg = self._load(DiffusionPipeline.load_config, weights=False)
        name = cfg.get("_class_name") if isinstance(cfg, dict) else None
        if not isinstance(name, str):
            raise ProfileError(
                f"editor profile {self.profile_name!r}: {self.model!r} names a custom pipeline {name!r} in its "
                f"model_index.json; SafetyPairs does not run remote code. Fix: name a diffusers pipeline "
                f"class in params.pipeline."
            )
        cls = getattr(diffusers, name, None)
        if not img2img_only and isinstance(cls, type) and takes_image_and_prompt(cls):
            return cls
        try:
            from diffusers.pipelines.auto_pipeline import (
                AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
                _get_task_class,
            )

            i2i = _get_task_class(AUTO_IMAGE2IMAGE_PIPELINES_MAPPING, name, throw_error_if_not_exist=False)
        except (ImportError, TypeError, ValueError, KeyError):
            # A private diffusers helper: gone, changed or refusing, 'auto' just cannot map this model,
            # and the error below says so.
            i2i = None
        if isinstance(i2i, type) and takes_image_and_prompt(i2i):
            return i2i
        raise _unknown_pipeline(self.profile_name, name,
                                "(named in the model's model_index.json) takes no image and has no "
                                "image-to-image variant")

    def _check_extra(self, extra: dict[str, Any]) -> None:
        call = self.pipeline_cls.__call__
        for key in extra:
            if key in PROFILE_PARAM_FOR:
                raise ProfileError(f"editor profile {self.profile_name!r}: set {key!r} with the profile param "
                                   f"{PROFILE_PARAM_FOR[key]!r}, not in extra_call_args.")
            if key in RESERVED_CALL_ARGS:
                raise ProfileError(f"editor profile {self.profile_name!r}: extra_call_args may not set {key!r}; "
                                   "the editor sets it.")
        _, dropped = accepted_call_args(call, {k: (v if v is not None else 0) for k, v in extra.items()})
        if dropped:
            accepted = sorted(set(inspect.signature(call).parameters) - RESERVED_CALL_ARGS - {"self", "kwargs"})
            raise ProfileError(
                f"editor profile {self.profile_name!r}: {self.pipeline_cls.__name__}.__call__ does not accept "
                f"extra_call_args {dropped}; it accepts {', '.join(accepted)}."
            )

    def _resolved_commit(self) -> str:
        """The hub commit the cached snapshot came from (free: it is the snapshot folder's name)."""
        if self.source.is_local_path:
            return ""
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(self.model, "model_index.json", revision=self.revision)
        except (ImportError, ValueError, OSError) as exc:  # provenance nicety, never fatal
            log.warning("editor profile %r: could not read the cached commit of %r (%s: %s)",
                        self.profile_name, self.model, type(exc).__name__, exc)
            return ""
        return Path(found).parent.name if isinstance(found, str) else ""

    # -- provenance ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Everything that affects the output, for the provenance record."""
        import diffusers
        import torch

        scheduler = getattr(self.pipe, "scheduler", None)
        return {
            "editor": "diffusers",
            "profile": self.profile_name,
            "pipeline": self.pipeline_name,
            "pipeline_class": type(self.pipe).__name__,
            "model": self.model,
            "revision": self.revision or "",
            "resolved_commit": self.resolved_commit,
            "variant": self.variant or "",
            "dtype": self.dtype_name,
            "device": self.device,
            "cpu_offload": self.cpu_offload,
            "steps": self.effective["steps"],
            "guidance_scale": self.effective["guidance_scale"],
            "image_guidance_scale": self.effective["image_guidance_scale"],
            "negative_prompt": self._negative,
            "extra_call_args": dict(self.extra_call_args),
            "call_args": {k: v for k, v in self._call_args.items()},
            "ignored_params": list(self.ignored_params),
            "batch_size": 1 if self.one_per_call else self.batch_size,
            "resolution": self.resolution,
            "max_side": self.max_side,
            "multiple_of": self.multiple_of,
            "pipeline_multiple": self.pipe_multiple,
            "size_rule": RULES[self.size_plan((1024, 768)).rule],  # the rule depends on the class and config only
            "prompt_template": self.prompt_template,
            "scheduler_override": self.scheduler_override,
            "resize_back": "lanczos",
            "generator": "torch.Generator('cpu') per candidate, seeded with the candidate's seed",
            "scheduler": type(scheduler).__name__ if scheduler is not None else "",
            "scheduler_config": dict(getattr(scheduler, "config", {}) or {}),
            "safety_checker": self.safety_checker,
            "safety_checker_disabled": self.safety_checker_disabled,
            **({"safety_checker_note": SAFETY_NOTE} if self.safety_checker_disabled else {}),
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "transformers": package_version("transformers"),
        }

    # -- public API -------------------------------------------------------------------------

    def prompt_for(self, instruction: Instruction) -> str:
        target = instruction.target or {}
        values = {"text": instruction.text, "keep": instruction.keep,
                  "replacement": str(target.get("replacement") or ""), "original": str(target.get("original") or "")}
        return " ".join(self.prompt_template.format(**values).split())

    def edit(
        self,
        images: Sequence[Image.Image],
        instructions: Sequence[Instruction],
        seeds: Sequence[int],
    ) -> list[EditResult]:
        check_edit_args(images, instructions, seeds)
        sources = [im.convert("RGB") for im in images]
        plans = [self.size_plan(src.size) for src in sources]
        # At most one resample before the pipeline: none where it resizes the source itself.
        inputs = [src if plan.input_size == src.size else src.resize(plan.input_size, Image.Resampling.LANCZOS)
                  for src, plan in zip(sources, plans)]
        # One height/width per call: candidates share a call only when their plans agree on every size.
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan.batch_key, []).append(i)
        step = 1 if self.one_per_call else self.batch_size
        results: list[EditResult | None] = [None] * len(sources)
        for members in groups.values():
            for start in range(0, len(members), step):
                chunk = members[start:start + step]
                done = self._run([sources[i] for i in chunk], [inputs[i] for i in chunk], plans[chunk[0]],
                                 [instructions[i] for i in chunk], [int(seeds[i]) for i in chunk])
                for i, result in zip(chunk, done):
                    results[i] = result
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def size_plan(self, source_size: tuple[int, int]) -> SizePlan:
        """How a source of this (width, height) is read and drawn (see ``diffusers_sizes``)."""
        return plan_size(type(self.pipe).__name__, source_size, resolution=self.resolution,
                         max_side=self.max_side, multiple_of=self.multiple_of, pipe_multiple=self.pipe_multiple,
                         auto_resize=self.extra_call_args.get("_auto_resize", True) is not False)

    def _run(self, sources: list[Image.Image], inputs: list[Image.Image], plan: SizePlan,
             instructions: list[Instruction], seeds: list[int]) -> list[EditResult]:
        """One pipeline call for candidates that share a size plan; outputs come back at their source's size."""
        prompts = [self.prompt_for(ins) for ins in instructions]
        out = self._call_pipeline(prompts, inputs, plan, seeds)
        raw_images = list(out.images)
        if len(raw_images) != len(sources):
            raise RuntimeError(f"{type(self.pipe).__name__} returned {len(raw_images)} images for "
                               f"{len(sources)} prompts")
        nsfw = getattr(out, "nsfw_content_detected", None)
        tokens = self._token_counts(prompts)
        results = []
        for k, (src, inp, raw, prompt, seed) in enumerate(zip(sources, inputs, raw_images, prompts, seeds)):
            raw = raw.convert("RGB")
            if raw.size != plan.draw_size:  # the size rule and this diffusers disagree: say so
                log.warning("editor profile %r: %s drew %s, the size rule (%s) expected %s", self.profile_name,
                            type(self.pipe).__name__, raw.size, plan.rule, plan.draw_size)
            resized = raw.size != src.size
            image = raw.resize(src.size, Image.Resampling.LANCZOS) if resized else raw
            detail = self._detail(prompt, seed, src, inp, raw, len(sources))
            detail.update(plan.detail())
            if nsfw is not None:
                detail["nsfw_content_detected"] = bool(nsfw[k])
            if tokens is not None:
                detail["prompt_tokens"], detail["prompt_max_tokens"] = tokens[0][k], tokens[1]
                detail["prompt_truncated"] = tokens[0][k] > tokens[1]
            results.append(EditResult(image=image, raw_size=raw.size, region=None, detail=detail))
        return results

    def _call_pipeline(self, prompts: list[str], inputs: list[Image.Image], plan: SizePlan, seeds: list[int]) -> Any:
        """The pipeline's output for one batch, each candidate with its own seeded CPU generator."""
        import torch

        kwargs: dict[str, Any] = {**self._call_args, **dict(plan.call_args)}
        kwargs["prompt"] = prompts
        kwargs["image"] = self._image_arg(inputs)
        kwargs["generator"] = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        if self._negative is not None:
            kwargs["negative_prompt"] = [self._negative] * len(prompts)
        return self.pipe(**kwargs)

    def _image_arg(self, inputs: list[Image.Image]) -> Image.Image | list[Image.Image]:
        """``image`` as each pipeline expects it: one image (Qwen-Image-Edit), a list of the references of one
        edit (Qwen-Image-Edit-Plus: here one, the source), or one image per candidate (the rest)."""
        name = type(self.pipe).__name__
        if name == QWEN_EDIT:
            return inputs[0]
        if name == QWEN_EDIT_PLUS:
            return [inputs[0]]
        return inputs

    def _detail(self, prompt: str, seed: int, src: Image.Image, inp: Image.Image, raw: Image.Image,
                batch_call_size: int) -> dict[str, Any]:
        """What one result records: the settings in effect, the prompt, the seed and the sizes."""
        detail: dict[str, Any] = {
            "method": "diffusers",
            "pipeline_class": type(self.pipe).__name__,
            "model": self.model,
            "revision": self.info.revision,
            "steps": self.effective["steps"],
            "guidance_scale": self.effective["guidance_scale"],
            "image_guidance_scale": self.effective["image_guidance_scale"],
            "extra_call_args": dict(self.extra_call_args),
            "negative_prompt": self._negative,
            "seed": int(seed),
            "prompt": prompt,
            "source_size": list(src.size),
            "input_size": list(inp.size),
            "raw_size": list(raw.size),
            "resized": raw.size != src.size,
            "batch_call_size": batch_call_size,
            "dtype": self.dtype_name,
            "device": self.device,
            "safety_checker": self.safety_checker,
            "safety_checker_disabled": self.safety_checker_disabled,
        }
        if self.safety_checker_disabled:
            detail["safety_checker_note"] = SAFETY_NOTE
        return detail

    def _token_counts(self, prompts: list[str]) -> tuple[list[int], int] | None:
        """Prompt lengths for pipelines whose only text encoder is CLIP-sized (long prompts get cut)."""
        tok = getattr(self.pipe, "tokenizer", None)
        if tok is None or getattr(self.pipe, "tokenizer_2", None) is not None:
            return None
        limit = getattr(tok, "model_max_length", None)
        if not isinstance(limit, int) or limit > 1024:
            return None
        try:
            return [len(ids) for ids in tok(prompts).input_ids], limit
        except (TypeError, ValueError, AttributeError) as exc:  # informational only: the edit goes ahead
            log.warning("editor profile %r: could not count prompt tokens (%s: %s)",
                        self.profile_name, type(exc).__name__, exc)
            return None

    def close(self) -> None:
        pipe = getattr(self, "pipe", None)
        if pipe is None:
            return
        self.pipe = None  # type: ignore[assignment]
        del pipe
        gc.collect()
        free_cuda_cache(self.device)
