"""Benchmark processing jobs at scale: the IMDB corpus tokenised and normalised by 1 and by 2 instances.

    .venv/bin/python bench/scale_processing.py [--shards 8] [--rows 50000]

The corpus (../shared/data/imdb/imdb_50k.csv.gz) is first split into shard files, so that
ShardedByS3Key has files to split; a ScriptProcessor then runs TOKENIZE_SCRIPT, which writes each
shard's sentences with nlpforge's text stage (`nlpforge corpus tokenize`: HTML clean-up, NFKC,
lower case, one sentence a line). The concatenated outputs of the two runs must be identical.
Prints a Markdown table: instances, seconds, rows/s, identical.
"""
import argparse
import csv
import gzip
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

IMDB = Path(os.environ.get("NLPFORGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "imdb" / "imdb_50k.csv.gz"

TOKENIZE_SCRIPT = '''
"""Tokenise every CSV shard of --input into --output/<shard>.tokens.txt, one sentence a line."""
import argparse
import json
from pathlib import Path

from nlpforge.text.jobs import TokenizeJob, tokenized_lines

parser = argparse.ArgumentParser()
parser.add_argument("--input", required=True)
parser.add_argument("--output", required=True)
parser.add_argument("--config", required=True)
args = parser.parse_args()
host = json.loads((Path(args.config) / "resourceconfig.json").read_text())["current_host"]
shards = sorted(Path(args.input).glob("*.csv"))
print(f"{host}: {len(shards)} shard(s): {', '.join(p.name for p in shards)}")
for shard in shards:
    job = TokenizeJob.of(corpus=[str(shard)], column="review")
    with open(Path(args.output) / f"{shard.stem}.tokens.txt", "w", encoding="utf-8") as out:
        for line in tokenized_lines(job):
            out.write(line + "\\n")
'''


def split_corpus(source: Path, folder: Path, shards: int, rows: int | None = None) -> int:
    """Write the first `rows` reviews (all when None) as `shards` CSV files of consecutive rows; returns the rows."""
    with gzip.open(source, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        records = list(itertools.islice(reader, rows))
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(records) // shards)
    for number in range(shards):
        with open(folder / f"imdb-{number:03d}.csv", "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(records[number * size:(number + 1) * size])
    return len(records)


def tokenize_shards(shards: Path, output: Path, instances: int, jobs_root: Path, work: Path) -> Path:
    """Run TOKENIZE_SCRIPT on `instances` instances, the shards sharded by key; returns the output folder."""
    from nlpforge.sdk import ProcessingInput, ProcessingOutput, ScriptProcessor

    script = work / "tokenize_shards.py"
    script.write_text(TOKENIZE_SCRIPT, encoding="utf-8")
    processor = ScriptProcessor(command=["python3"], instance_count=instances, jobs_root=str(jobs_root),
                                base_job_name=f"imdb-tokens-{instances}")
    processor.run(code=str(script),
                  inputs=[ProcessingInput(str(shards), "/opt/ml/processing/input/shards",
                                          s3_data_distribution_type="ShardedByS3Key")],
                  outputs=[ProcessingOutput("/opt/ml/processing/output", str(output))],
                  arguments=["--input", "/opt/ml/processing/input/shards", "--output", "/opt/ml/processing/output",
                             "--config=/opt/ml/config"], logs=False)
    return output


def concatenated(folder: Path) -> bytes:
    """Every output file's bytes, in the order of the shard names."""
    return b"".join(path.read_bytes() for path in sorted(folder.glob("*.tokens.txt")))


def bench_processing(shards: int = 8, rows: int | None = None) -> list[dict]:
    """Tokenise IMDB with 1 and with 2 instances; print and return the table's rows."""
    if not IMDB.is_file():
        sys.exit(f"IMDB corpus not found at {IMDB} (set NLPFORGE_SHARED_DATA to the shared data folder)")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        count = split_corpus(IMDB, work / "shards", shards, rows)
        results, outputs = [], {}
        for instances in (1, 2):
            started = time.perf_counter()
            outputs[instances] = tokenize_shards(work / "shards", work / f"out-{instances}", instances,
                                                 work / "jobs", work)
            seconds = time.perf_counter() - started
            results.append({"instances": instances, "seconds": seconds, "rows_per_second": count / seconds})
        same = concatenated(outputs[1]) == concatenated(outputs[2])
        lines = concatenated(outputs[1]).count(b"\n")
    print(f"IMDB: {count:,} reviews in {shards} shards -> {lines:,} sentences; {os.cpu_count()} CPU(s)\n")
    print("| instances | seconds | rows/s | identical to 1 instance |\n|---|---|---|---|")
    for row in results:
        row["identical"] = "yes" if row["instances"] == 1 or same else "no"
        print(f"| {row['instances']} | {row['seconds']:.1f} | {row['rows_per_second']:,.0f} | {row['identical']} |")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--rows", type=int, default=None, help="only the first ROWS reviews (default: all)")
    arguments = parser.parse_args()
    bench_processing(arguments.shards, arguments.rows)
