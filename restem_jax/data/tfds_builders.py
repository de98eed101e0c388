"""TFDS builders that read the published data set files from a manual directory.

T5X users keep data sets as prepared TFDS directories (local or gs://) and read them with
`seqio.TfdsDataSource`. Nothing here downloads: each builder reads the files the data set's
authors publish, from `--manual_dir`, validates them (`records`) and writes TFRecords under
`--data_dir`:

  restem_math       MATH (Hendrycks et al. 2021): split/subject/N.json; or the hub's
                    EleutherAI/hendrycks_math or HuggingFaceH4/MATH-500 (test only)
  restem_apps       APPS (Hendrycks et al. 2021): train.jsonl, test.jsonl (codeparrot/apps)
  restem_humaneval  HumanEval (Chen et al. 2021): HumanEval.jsonl.gz or openai/openai_humaneval
  restem_mbpp       MBPP (Austin et al. 2021): google-research-datasets/mbpp, full/ or
                    sanitized/ (train, validation, test)
  gsm8k             TFDS's own catalog builder, with its download step replaced by the local
                    train.jsonl / test.jsonl (or the hub's openai/gsm8k parquet files), so the
                    result is the catalog's `gsm8k` data set and is read through the catalog
                    builder.

Hub snapshots are read by `restem_jax.data.hub` (see there for the layouts and ids); a split the files
do not have (MATH-500's train) is not written.

Our builders store the flat record layout of `records.FIELDS`, so a prepared data set and the
same files read directly give identical examples. The builders are not added to TFDS's global
registry (that would make a second import of this module an error); prepared data sets are read
back from their files with `tfds.builder(name, data_dir=...)`.
"""

from __future__ import annotations

import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils
from tensorflow_datasets.text.gsm8k import gsm8k as tfds_gsm8k

from restem_jax.data import hub
from restem_jax.data import records

_VERSION = "1.0.0"


class _NoDownloads:
  """Mixin for builders that read only `manual_dir`.

  TFDS looks for URL checksums beside a builder's code, and locating the code imports
  `importlib_resources`, which TFDS 4.9.10 imports unconditionally but only installs on
  Python < 3.9. Builders that download nothing have no checksums, so they report no code path.
  """

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=invalid-overridden-method
    return None


def _source(builder, dl_manager) -> epath.Path:
  """The path `prepare` was given: TFDS's manual_dir must be a directory, ours may be a file."""
  return epath.Path(getattr(builder, "source_path", None) or dl_manager.manual_dir)


class _RecordsBuilder(_NoDownloads, tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose examples are `records.read(KIND, manual_dir, split)`."""

  KIND = ""
  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = {_VERSION: "Flat restem_jax record layout (records.FIELDS)."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(
            {f: tfds.features.Text() for f in records.FIELDS}),
        homepage=records.SOURCES[self.KIND].url,
        description=records.SOURCES[self.KIND].description)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _source(self, dl_manager)
    return {split: self._generate_examples(manual_dir, split)
            for split in records.splits_present(self.KIND, manual_dir)}

  def _generate_examples(self, manual_dir: epath.Path, split: str):
    for record in records.read(self.KIND, manual_dir, split):
      yield record["id"], record


class RestemMath(_RecordsBuilder, skip_registration=True):
  """MATH from its published directory layout."""
  name = "restem_math"
  KIND = "math"
  MANUAL_DOWNLOAD_INSTRUCTIONS = records.missing_message(KIND, "--manual_dir")


class RestemApps(_RecordsBuilder, skip_registration=True):
  """APPS from its published JSONL files (all difficulties; tasks filter)."""
  name = "restem_apps"
  KIND = "apps"
  MANUAL_DOWNLOAD_INSTRUCTIONS = records.missing_message(KIND, "--manual_dir")


class RestemHumaneval(_RecordsBuilder, skip_registration=True):
  """HumanEval from its published HumanEval.jsonl.gz."""
  name = "restem_humaneval"
  KIND = "humaneval"
  MANUAL_DOWNLOAD_INSTRUCTIONS = records.missing_message(KIND, "--manual_dir")


class RestemMbpp(_RecordsBuilder, skip_registration=True):
  """MBPP from a snapshot of its hub repository (HumanEval-style records, `formats.mbpp_problem`)."""
  name = "restem_mbpp"
  KIND = "mbpp"
  MANUAL_DOWNLOAD_INSTRUCTIONS = records.missing_message(KIND, "--manual_dir")


class Gsm8kFromFiles(_NoDownloads, tfds_gsm8k.Gsm8k, skip_registration=True):
  """TFDS's catalog `gsm8k`, built from local copies of the files it would download."""
  name = "gsm8k"
  MANUAL_DOWNLOAD_INSTRUCTIONS = records.missing_message("gsm8k", "--manual_dir")

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = _source(self, dl_manager)
    records.check_present("gsm8k", manual_dir)
    found = records.snapshot("gsm8k", manual_dir)
    # The catalog also has the *_socratic splits; they are built when their files are there
    # (the hub's socratic/ config directory is read when it is the directory given).
    return {split: self._generate_examples((found, split))
            for split in tfds_gsm8k._URLS  # pylint: disable=protected-access
            if split in found.splits}

  def _generate_examples(self, snapshot_and_split):
    # Validate every record with our reader first, so a malformed file fails with file:line
    # before TFDS writes anything; then build the catalog's own examples (the catalog's keys:
    # the 0-based line, here the row index).
    found, split = snapshot_and_split
    for problem in hub.read_split(found, split):
      annotation, short_answer = problem["solution"].rsplit("#### ", 1) \
          if "#### " in problem["solution"] else (problem["solution"], problem["answer"])
      yield int(problem["id"]), {"question": problem["question"], "answer": problem["solution"],
                                 "annotation": annotation, "short_answer": short_answer}


BUILDERS = {"math": RestemMath, "apps": RestemApps, "humaneval": RestemHumaneval,
            "gsm8k": Gsm8kFromFiles, "mbpp": RestemMbpp}


def tfds_name(kind: str) -> str:
  """The TFDS name (with version) that `prepare` writes for a data set kind."""
  return f"{BUILDERS[kind].name}:{BUILDERS[kind].VERSION}"


def is_prepared(kind: str, data_dir: epath.PathLike | None) -> bool:
  """Whether `prepare` has written the data set `kind` under `data_dir`."""
  if data_dir is None or kind not in BUILDERS:
    return False
  version_dir = epath.Path(data_dir) / BUILDERS[kind].name / str(BUILDERS[kind].VERSION)
  return (version_dir / "dataset_info.json").exists()


def prepare(kind: str, manual_dir: epath.PathLike, data_dir: epath.PathLike) -> epath.Path:
  """Builds the TFDS data set `kind` from the published files in `manual_dir`.

  Args:
    kind: "math", "apps", "humaneval", "gsm8k" or "mbpp".
    manual_dir: the directory holding the published files (see `records.SOURCES`), a hub
      snapshot (`restem_jax.data.hub`), or one of its config directories or files.
    data_dir: the TFDS data directory to write (local or gs://).

  Returns:
    The prepared dataset's version directory.

  Raises:
    FileNotFoundError: the published files are not in `manual_dir` (names the files and where
      they are published).
    ValueError: a file is malformed (names file and line), or holds another data set.
  """
  if kind not in BUILDERS:
    raise ValueError(f"no TFDS builder for {kind!r}; known: {sorted(BUILDERS)} (the generic "
                     f"JSONL and the embedded tasks need no prepare step)")
  manual_dir = epath.Path(manual_dir)
  records.check_present(kind, manual_dir)
  builder = BUILDERS[kind](data_dir=str(data_dir))
  builder.source_path = manual_dir  # a directory or, for one split, a file
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir if manual_dir.is_dir() else manual_dir.parent)))
  return epath.Path(builder.data_dir)
