"""Batch transform: SageMaker's Transformer, predictions for every row of a file or folder of files.

    transformer = Transformer("model/", output_path="predictions/", instance_count=2)
    transformer.transform("reviews/", content_type="text/csv", text_columns=["review_body"])

With instance_count > 1 it is a processing job (sdk/processing.py): the input files are sharded by key
and each instance predicts its files with the same function as a one-instance transform, so the `.out`
files are the same. `python -m nlpforge.sdk.transform MODEL INPUT OUTPUT ACCEPT [COLUMN ...]` is one
instance.
"""
import os
import sys
from pathlib import Path

from nlpforge.errors import ConfigError, EndpointError, NlpforgeError, ProcessingJobError
from nlpforge.sdk.processing import (PROCESSING_PATH, ProcessingInput, ProcessingJob, ProcessingOutput, Processor,
                                     check_instances)
from nlpforge.settings import check_writable


class Transformer:
    """Batch transform: predictions for every row of a file or folder of files, written as `<file>.out`.

    With instance_count > 1 the files are sharded by key between instances that run at once (a processing
    job under the jobs root); the `.out` files are those of one instance."""

    def __init__(self, model_dir, output_path: str | None = None, accept: str = "application/jsonlines",
                 training_job_name: str | None = None, instance_count: int = 1, instance_type: str = "local",
                 jobs_root=None, base_transform_job_name: str | None = None):
        if accept not in ("application/jsonlines", "text/csv"):
            raise EndpointError(f"accept must be application/jsonlines or text/csv, not {accept!r}")
        try:
            check_instances(instance_count, instance_type)
        except ConfigError as error:
            raise EndpointError(error.message) from None
        if not isinstance(model_dir, (str, os.PathLike)):
            raise EndpointError(f"model_dir must be the path of a model folder (a str or pathlib.Path), not "
                                f"{model_dir!r}")
        if output_path is not None:
            output_folder(output_path)
        self.model_dir, self.output_path, self.accept = Path(model_dir), output_path, accept
        self.training_job_name = training_job_name
        self.instance_count, self.instance_type = instance_count, instance_type
        self.jobs_root = jobs_root
        self.base_transform_job_name = base_transform_job_name
        self.latest_transform_job: ProcessingJob | None = None
        self.outputs: list[Path] = []

    def transform(self, data, output_path: str | None = None, content_type: str | None = None,
                  split_type: str = "Line", text_columns: list[str] | None = None, job_name: str | None = None,
                  **_sagemaker_options) -> list[Path]:
        """Predict every row of `data` (a file or a folder of files); returns the .out files written. Each
        file is read by its suffix; `content_type`, when given, must say the same of every file."""
        output = output_path if output_path is not None else self.output_path
        if output is None:
            raise EndpointError("give output_path (to transformer() or transform()) for the .out files")
        if str(data).startswith("s3://"):
            raise EndpointError(f"batch transform input {data} is an S3 URI; nlpforge does not read S3, give a local "
                                "file or folder")
        source = Path(str(data).removeprefix("file://")).expanduser()
        if not source.exists():
            raise EndpointError(f"batch transform input {source} does not exist")
        if split_type != "Line":
            raise EndpointError("split_type must be 'Line': each row is one record")
        if isinstance(text_columns, str):
            text_columns = [text_columns]  # one column, not its letters
        output = output_folder(output)
        files = batch_files(source)
        if not files:  # else the transform would succeed with no predictions (an instance's shard may be empty)
            raise EndpointError(f"batch transform input {source} holds no data files (only the files directly in it "
                                "are read, not subfolders, hidden files or .out files); give a file or a folder of "
                                "them")
        check_content_type(content_type, files)
        if self.instance_count == 1:
            self.outputs = transform_files(self.model_dir, files, output, self.accept, text_columns)
            return self.outputs
        entrypoint = [sys.executable, "-m", "nlpforge.sdk.transform", str(self.model_dir.resolve()),
                      f"{PROCESSING_PATH}/input/data", f"{PROCESSING_PATH}/output", self.accept, *(text_columns or [])]
        processor = Processor(instance_count=self.instance_count, instance_type=self.instance_type,
                              entrypoint=entrypoint, jobs_root=self.jobs_root,
                              base_job_name=self.base_transform_job_name or self.training_job_name or "transform")
        processor.outputs_beside_inputs = True  # <file>.out files, which no input has and batch_files skips
        try:
            processor.run(inputs=[ProcessingInput(str(source.resolve()), f"{PROCESSING_PATH}/input/data", "data",
                                                  s3_data_distribution_type="ShardedByS3Key")],
                          outputs=[ProcessingOutput(f"{PROCESSING_PATH}/output", str(output), "predictions")],
                          logs=False, job_name=job_name)
        except ProcessingJobError as error:
            raise EndpointError(f"batch transform {error.message.removeprefix('processing job ')}") from None
        finally:
            self.latest_transform_job = processor.latest_job
        self.outputs = [output / f"{path.name}.out" for path in files]
        return self.outputs


def output_folder(output_path) -> Path:
    """The folder the .out files go to, refused now (not after predicting) when it is S3 or cannot be written."""
    if isinstance(output_path, str) and not output_path.strip():
        # Path("  ") would be a folder named by spaces in the working folder
        raise EndpointError(f"output_path {output_path!r} is blank; give the folder for the .out files")
    if str(output_path).startswith("s3://"):
        raise EndpointError(f"output_path {output_path} is an S3 URI; nlpforge runs locally, give a local folder")
    output = Path(str(output_path).removeprefix("file://")).expanduser().resolve()
    try:
        check_writable(output, "output_path", folder=True)
    except ConfigError as error:
        raise EndpointError(error.message) from None
    return output


def check_content_type(content_type, files: list[Path]) -> None:
    """A content_type nlpforge reads, and one that every input file's suffix agrees with (application/json
    stands for JSON lines here, one record a line, as SageMaker's batch transform splits it)."""
    from nlpforge.data.formats import MEDIA_TYPES, media_format, table_format

    if content_type is None:
        return
    fmt = "jsonl" if str(content_type).split(";")[0].strip().lower() == "application/json" else \
        media_format(content_type)
    if fmt is None:
        raise EndpointError(f"content_type {content_type!r} is not one batch transform reads; use one of "
                            f"{', '.join(MEDIA_TYPES)}, or leave it out to read each file by its suffix")
    for path in files:
        found = table_format(path)
        if found != fmt:
            what = f"a {found} file" if found else "not a data file nlpforge reads (.csv, .tsv, .jsonl, .parquet)"
            raise EndpointError(f"content_type {content_type} says {fmt}, but {path.name} is {what}; give the "
                                "content_type of the files, or leave it out to read each file by its suffix")


def batch_files(source: Path) -> list[Path]:
    """The files a batch transform reads: the file itself, or the files directly in the folder, by name,
    leaving out hidden files (.DS_Store, partial writes) and earlier transforms' `.out` files."""
    if not source.is_dir():
        return [source]
    return sorted(p for p in source.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix != ".out")


def transform_files(model_dir, files: list[Path], output: Path, accept: str, text_columns=None) -> list[Path]:
    """Predict each file into `output/<name>.out` (written under a hidden name, then renamed)."""
    from nlpforge.tasks.files import predict_file

    output.mkdir(parents=True, exist_ok=True)
    suffix = ".csv" if accept == "text/csv" else ".jsonl"
    written = []
    for path in files:
        temporary = output / f".{path.name}{suffix}"
        predict_file(model_dir, path, temporary, text_columns=text_columns)
        final = output / f"{path.name}.out"
        os.replace(temporary, final)
        written.append(final)
    return written


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print("usage: python -m nlpforge.sdk.transform MODEL INPUT OUTPUT ACCEPT [COLUMN ...]", file=sys.stderr)
        return 2
    model_dir, source, output, accept, *columns = argv
    try:
        transform_files(model_dir, batch_files(Path(source)), Path(output), accept, columns or None)
    except NlpforgeError as error:  # one line, which the job's failure reason quotes
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
