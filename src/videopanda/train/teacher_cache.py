"""Teacher feature cache: the frozen teacher's distillation targets, computed once per media file.

``build_teacher_cache`` runs the teacher over every visual sample of a dataset
(each distinct media file and clip once) and writes sharded safetensors::

    CACHE_DIR/index.json              settings (teacher config + weight fingerprint, frames,
                                      flips, dtype, data hash), then sample key -> (shard, entry)
    CACHE_DIR/shard-00000.safetensors "{entry}.features" (N_t, Dt), "{entry}.patches" (F,)

Sample keys are ``dataset.media_key`` (``path`` or ``path@start-end``). Training
flips frames horizontally at random, and the teacher's features of a flipped
frame are not a flip of its features, so by default each sample is cached in
both orientations: ``key`` and ``key + FLIPPED_SUFFIX`` (the dataset gives a
flipped sample that key). A shard is written atomically once complete, so an
interrupted run resumes where it stopped; a rerun whose teacher, settings or
data differ is refused instead of mixing two caches. Unusable media (the same
failures the dataset skips) are recorded in the index, not cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videopanda.data.dataset import FLIPPED_SUFFIX, SKIPPABLE, load_annotations, media_key, parse_item
from videopanda.data.decode import read_image, read_video_frames
from videopanda.data.transform import preprocess_frames
from videopanda.files import atomic_write_text
from videopanda.model.configuration_videopanda import VideoPandaConfig
from videopanda.model.teacher import TeacherConfig, VideoTeacher, teacher_patch_features

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class MediaItem:
    """One distinct visual input of the dataset."""

    key: str  # dataset.media_key
    video: Path | None
    image: Path | None
    clip: tuple[float, float] | None


@dataclass(frozen=True)
class CacheSettings:
    """Everything the cached features depend on; a resumed run must match it exactly."""

    teacher: dict  # TeacherConfig.to_dict()
    fingerprint: str  # sha256 of the teacher's config and weights
    num_frames: int  # frames per video (padded)
    flips: bool  # flipped orientation cached too
    dtype: str  # storage dtype of the features
    shard_size: int  # media items per shard
    data: str  # sha256 of the ordered media keys


def teacher_fingerprint(teacher: VideoTeacher) -> str:
    """sha256 of the teacher's config and every weight's bytes: which teacher made a cache."""
    digest = hashlib.sha256(json.dumps(teacher.config.to_dict(), sort_keys=True).encode())
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def collect_media(
    annotation_files: Sequence[str | Path], video_root: str | Path, image_root: str | Path | None = None
) -> list[MediaItem]:
    """Distinct videos/images (and clips) of the annotation files, in order of first appearance.

    Items the dataset would reject while parsing are skipped here too (logged once, counted).
    """
    video_root = Path(video_root)
    image_root = video_root if image_root is None else Path(image_root)
    media: dict[str, MediaItem] = {}
    rejected = 0
    for item in load_annotations(annotation_files):
        try:
            parsed = parse_item(item.item, video_root, image_root)
        except SKIPPABLE as err:
            rejected += 1
            logger.debug("not caching %s: %s", item.source, err)
            continue
        if parsed.media is not None:
            key = media_key(parsed)
            media.setdefault(key, MediaItem(key, parsed.video, parsed.image, parsed.clip))
    if rejected:
        logger.warning("%d annotation items are malformed and were not cached (the dataset skips them too)", rejected)
    return list(media.values())


class TeacherFrames(Dataset):
    """Media item i -> ``(i, teacher_pixel_values (T, 4, St, St))``, or ``(i, reason)`` when unusable."""

    def __init__(self, items: Sequence[MediaItem], teacher: TeacherConfig, num_frames: int) -> None:
        self.items, self.teacher, self.num_frames = list(items), teacher, num_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Tensor | str]:
        item, size = self.items[index], self.teacher.image_size
        try:
            if item.video is not None:
                frames, num_frames = read_video_frames(item.video, self.num_frames, item.clip), self.num_frames
            elif item.image is not None:
                frames, num_frames = read_image(item.image), None
            else:
                raise ValueError(f"media item {item.key!r} has neither a video nor an image")
            visuals = preprocess_frames(
                frames, image_size=size, teacher_image_size=size, patch_size=self.teacher.patch_size,
                num_frames=num_frames, train=False, with_teacher=True,
            )
        except SKIPPABLE as err:
            return index, f"{type(err).__name__}: {err}"
        if visuals.teacher_pixel_values is None:
            raise RuntimeError("preprocess_frames(with_teacher=True) returned no teacher frames")
        return index, visuals.teacher_pixel_values


def build_teacher_cache(
    teacher: VideoTeacher,
    items: Sequence[MediaItem],
    out_dir: str | Path,
    *,
    num_frames: int = 8,
    batch_size: int = 8,
    shard_size: int = 256,
    flips: bool = True,
    dtype: torch.dtype = torch.float16,
    num_workers: int = 0,
) -> Path:
    """Cache the teacher's features of ``items`` under ``out_dir`` (resumable); returns the index path.

    The teacher runs on its own device and dtype; ``batch_size`` media items go through it at once.
    """
    if not items:
        raise ValueError("no videos or images to cache: the annotation files name no usable media")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = CacheSettings(
        teacher=teacher.config.to_dict(), fingerprint=teacher_fingerprint(teacher), num_frames=num_frames,
        flips=flips, dtype=str(dtype).removeprefix("torch."), shard_size=shard_size,
        data=hashlib.sha256("\n".join(i.key for i in items).encode()).hexdigest(),
    )
    _start_index(out_dir, settings)
    shards = [list(range(s, min(s + shard_size, len(items)))) for s in range(0, len(items), shard_size)]
    frames = TeacherFrames(items, teacher.config, num_frames)
    with tqdm(total=len(items), desc="teacher cache", unit="media") as progress:
        for number, members in enumerate(shards):
            path = out_dir / shard_name(number)
            if not path.exists():
                loader = DataLoader(
                    torch.utils.data.Subset(frames, members), batch_size=batch_size,
                    num_workers=num_workers, collate_fn=list,
                )
                _write_shard(path, _shard_tensors(teacher, loader, items, flips, dtype, progress))
            else:
                progress.update(len(members))
    return _finish_index(out_dir, settings, len(shards))


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def _shard_tensors(
    teacher: VideoTeacher, loader: DataLoader, items: Sequence[MediaItem], flips: bool, dtype: torch.dtype,
    progress: tqdm,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Run the teacher over one shard: ``{entry.features, entry.patches}`` and ``{key: entry}`` / failures."""
    device = next(teacher.parameters()).device
    tensors: dict[str, Tensor] = {}
    entries: dict[str, str] = {}
    failed: dict[str, str] = {}
    for batch in loader:
        usable = [(i, x) for i, x in batch if isinstance(x, Tensor)]
        failed.update({items[i].key: x for i, x in batch if isinstance(x, str)})
        keys = [items[i].key for i, _ in usable]
        videos = [x for _, x in usable]  # each (T, 4, St, St)
        if flips:
            keys += [key + FLIPPED_SUFFIX for key in keys]
            videos += [x.flip(-1) for x in videos]
        if videos:
            pixels = torch.cat(videos).to(device, next(teacher.parameters()).dtype)  # (F, 4, St, St)
            lengths = torch.tensor([len(x) for x in videos])  # each sample is one temporal run
            features, patches = teacher_patch_features(teacher, pixels, lengths)
            per_sample = patches.cpu().split(lengths.tolist())
            per_sample_features = features.cpu().split([int(c.sum()) for c in per_sample])
            for key, feats, counts in zip(keys, per_sample_features, per_sample, strict=True):
                entry = str(len(entries))
                tensors[f"{entry}.features"] = feats.to(dtype).contiguous()
                tensors[f"{entry}.patches"] = counts.to(torch.int32)
                entries[key] = entry
        progress.update(len(batch))
    return tensors, {"entries": json.dumps(entries), "failed": json.dumps(failed)}


def _write_shard(path: Path, content: tuple[dict[str, Tensor], dict[str, str]]) -> None:
    tensors, metadata = content
    partial = path.with_suffix(".partial")
    try:
        save_file(tensors, str(partial), metadata=metadata)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves no half shard behind
        raise


def _start_index(out_dir: Path, settings: CacheSettings) -> None:
    """Write the settings of a new cache, or check that an existing one was built the same way."""
    index_path = out_dir / INDEX_FILE
    if index_path.exists():
        previous = json.loads(index_path.read_text()).get("settings")
        if previous != asdict(settings):
            changed = sorted(k for k, v in asdict(settings).items() if (previous or {}).get(k) != v)
            raise ValueError(
                f"{out_dir} holds a teacher cache built differently ({', '.join(changed)} changed); "
                "choose another --out or delete it"
            )
        logger.info("resuming the teacher cache in %s", out_dir)
        return
    if any(out_dir.glob("shard-*.safetensors")):
        raise ValueError(f"{out_dir} holds shards but no {INDEX_FILE}; choose another --out or delete it")
    _write_json(index_path, {"version": CACHE_VERSION, "complete": False, "settings": asdict(settings)})


def _finish_index(out_dir: Path, settings: CacheSettings, num_shards: int) -> Path:
    samples: dict[str, list] = {}
    failed: dict[str, str] = {}
    for number in range(num_shards):
        with safe_open(str(out_dir / shard_name(number)), "pt") as shard:
            metadata = shard.metadata()
        samples.update({key: [number, entry] for key, entry in json.loads(metadata["entries"]).items()})
        failed.update(json.loads(metadata["failed"]))
    if failed:
        logger.warning("%d media files could not be read and are not cached: %s", len(failed), sorted(failed)[:10])
    index_path = out_dir / INDEX_FILE
    _write_json(index_path, {
        "version": CACHE_VERSION, "complete": True, "settings": asdict(settings),
        "shards": [shard_name(n) for n in range(num_shards)], "samples": samples, "failed": failed,
    })
    logger.info("teacher cache complete: %d entries in %d shards (%s)", len(samples), num_shards, out_dir)
    return index_path


def _write_json(path: Path, value: dict) -> None:
    atomic_write_text(path, json.dumps(value))


class TeacherCache:
    """Read a complete teacher cache: ``get(sample_key) -> (features (N_t, Dt), patches_per_frame (F,))``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.is_file():
            raise ValueError(f"no {INDEX_FILE} in {self.directory}: not a teacher cache")
        index = json.loads(index_path.read_text())
        if index.get("version") != CACHE_VERSION:
            raise ValueError(f"{index_path} is cache version {index.get('version')}, expected {CACHE_VERSION}")
        if not index["complete"]:
            raise ValueError(f"the teacher cache in {self.directory} is incomplete: rerun `videopanda teacher cache`")
        self.settings = CacheSettings(**index["settings"])
        self.teacher_config = TeacherConfig.from_dict(self.settings.teacher)
        self.shards: list[str] = index["shards"]
        self.samples: dict[str, list] = index["samples"]
        self.failed: dict[str, str] = index["failed"]
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __contains__(self, key: str) -> bool:
        return key in self.samples

    def get(self, key: str) -> tuple[Tensor, Tensor]:
        """(features (N_t, Dt), patches_per_frame (F,) long) of one sample, as stored."""
        if key not in self.samples:
            base = key.removesuffix(FLIPPED_SUFFIX)
            reason = self.failed.get(base, "not in the cache (built from other data, or without --flips?)")
            raise KeyError(f"teacher cache {self.directory} has no features for {key!r}: {reason}")
        number, entry = self.samples[key]
        shard = self._shard(number)
        return shard.get_tensor(f"{entry}.features"), shard.get_tensor(f"{entry}.patches").long()

    def _shard(self, number: int):
        if number not in self._open:
            self._open[number] = safe_open(str(self.directory / self.shards[number]), "pt")
        return self._open[number]


class CachedTeacher:
    """A training teacher source (``train.teacher_source``) that reads the cache by ``sample_keys``."""

    needs_frames = False
    needs_keys = True

    def __init__(self, directory: str | Path, model_config: VideoPandaConfig) -> None:
        self.cache = TeacherCache(directory)
        teacher, settings = self.cache.teacher_config, self.cache.settings
        expected = {
            "teacher width": (teacher.hidden_size, model_config.teacher_hidden_size),
            "teacher image size": (teacher.image_size, model_config.teacher_image_size),
            "teacher patch size": (teacher.patch_size, model_config.teacher_patch_size),
            "frames per video": (settings.num_frames, model_config.num_frames),
        }
        wrong = [f"{name} {cached} (model {wanted})" for name, (cached, wanted) in expected.items() if cached != wanted]
        if wrong:
            raise ValueError(f"teacher cache {directory} does not fit the model: {', '.join(wrong)}")

    def __call__(self, batch: dict) -> tuple[Tensor, Tensor]:
        """batch["sample_keys"] (one per visual sample) -> (features (N_t, Dt), patches_per_frame (F,))."""
        if "sample_keys" not in batch:
            raise ValueError("the teacher cache needs sample_keys in the batch (dataset with_keys=True)")
        feature_rows, patch_counts = zip(*(self.cache.get(key) for key in batch["sample_keys"]), strict=True)
        patches = torch.cat(patch_counts)
        frames = batch.get("pixel_values_videos")
        if frames is not None and len(patches) != len(frames):
            raise ValueError(f"the teacher cache gives {len(patches)} frames for a batch of {len(frames)}")
        device = patches.device if frames is None else frames.device
        return torch.cat(feature_rows).to(device), patches.to(device)
