"""Fitting a MechWatch reference from recorded activations in Parquet, on a Dask cluster.

Each Parquet file is one partition of the corpus, one trace per row: `trace_id` (string), optionally
`output` (integer, null where there is none), and one column per site holding the site's vector (a list or
fixed-size list of floats; the sites' order is the columns' unless given). Every worker computes a moment
shard of its partitions (`mechwatch.moments`); the shards are merged pairwise on the cluster (a tree
reduction, Chan et al.'s formulas), and the one result is written as a moment shard file that
`mechwatch reference import` (or `Client.import_reference`) turns into an active reference: the same
reference a daemon fitting every trace would have.

Needs the `dask` extra (`pip install 'mechwatch[dask]'`: dask, distributed, pyarrow). As a command::

    python -m mechwatch.dask_fit --reference mlp --workers 4 --out mlp.shard --socket /run/mechwatch/mechwatch.sock data/*.parquet

`--scheduler tcp://host:8786` uses an existing cluster instead of a local one.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .moments import MomentShard

RESERVED = ("trace_id", "output")


def write_partition(path: str, sites: Mapping[str, np.ndarray], ids: Sequence[str],
                    outputs: Optional[Sequence[Optional[int]]] = None) -> None:
    """Writes traces to one Parquet partition in the layout `fit_parquet` reads (sites as fixed-size
    lists of float32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"trace_id": pa.array([str(i) for i in ids], pa.string())}
    if outputs is not None:
        columns["output"] = pa.array([None if o is None else int(o) for o in outputs], pa.int64())
    for name, values in sites.items():
        values = np.ascontiguousarray(values, dtype=np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    pq.write_table(pa.table(columns), path)


def site_columns(path: str) -> List[str]:
    """The site columns of a partition, in file order (every column but `trace_id` and `output`)."""
    import pyarrow.parquet as pq

    return [name for name in pq.read_schema(path).names if name not in RESERVED]


def shard_of_partition(path: str, name: str, sites: Sequence[str], calibration_fraction: float, alpha: float,
                       sample_size: int) -> Optional[MomentShard]:
    """The moment shard of one Parquet partition; None for a partition without rows."""
    import pyarrow.parquet as pq

    import pyarrow as pa
    import pyarrow.compute as pc

    table = pq.read_table(path, columns=["trace_id", *(["output"] if "output" in pq.read_schema(path).names else []), *sites])
    if table.column("trace_id").null_count:
        raise ValueError(f"{path}: trace_id is null in {table.column('trace_id').null_count} rows; every trace needs an id")
    ids = table.column("trace_id").to_pylist()
    if not ids:
        return None
    outputs = None
    if "output" in table.column_names:
        column = table.column("output")
        outputs = column.to_pylist()
        if not pa.types.is_integer(column.type):
            # pandas writes nullable integers as floats: whole numbers are taken, anything else refused.
            if not all(o is None or (isinstance(o, float) and o.is_integer()) for o in outputs):
                raise ValueError(f"{path}: output holds {column.type} values that are not whole numbers; expected integer outputs")
            outputs = [None if o is None else int(o) for o in outputs]
    arrays: Dict[str, np.ndarray] = {}
    for site in sites:
        column = table.column(site).combine_chunks()
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)):
            raise ValueError(f"{path}: site column {site!r} is {column.type}; expected a list of floats per trace")
        if column.null_count:
            raise ValueError(f"{path}: site column {site!r} is null in {column.null_count} rows; every trace needs every site")
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if lengths.min() != lengths.max() or lengths.min() == 0:
            raise ValueError(f"{path}: site column {site!r} holds vectors of widths {lengths.min()}–{lengths.max()}; "
                             "expected one width for every trace")
        values = column.flatten().to_numpy(zero_copy_only=False)
        arrays[site] = values.reshape(len(ids), int(lengths[0]))
    return MomentShard.from_arrays(name, arrays, ids, outputs, calibration_fraction=calibration_fraction, alpha=alpha,
                                   sample_size=sample_size)


def fit_parquet(client, paths: Sequence[str], name: str, sites: Optional[Sequence[str]] = None,
                calibration_fraction: float = 0.2, alpha: float = 0.01, sample_size: int = 5000) -> MomentShard:
    """The moment shard of every trace in the Parquet partitions `paths`, computed on the cluster of the
    `distributed.Client` `client`: one shard per partition on the workers, merged pairwise there.
    `calibration_fraction` must be the daemon's (its config's `calibration_fraction`)."""
    if not paths:
        raise ValueError("no Parquet partitions given")
    sites = list(sites) if sites else site_columns(paths[0])
    futures = client.map(shard_of_partition, list(paths), name=name, sites=sites, calibration_fraction=calibration_fraction,
                         alpha=alpha, sample_size=sample_size, pure=False)
    while len(futures) > 1:
        pairs = [client.submit(merge_pair, futures[i], futures[i + 1], pure=False) for i in range(0, len(futures) - 1, 2)]
        futures = pairs + ([futures[-1]] if len(futures) % 2 else [])
    shard = futures[0].result()
    if shard is None:
        raise ValueError(f"the {len(paths)} Parquet partitions hold no traces")
    return shard


def merge_pair(a: Optional[MomentShard], b: Optional[MomentShard]) -> Optional[MomentShard]:
    """Two partitions' shards merged (None: a partition without rows)."""
    return b if a is None else a if b is None else a.merge(b)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechwatch.dask_fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("partitions", nargs="+", help="Parquet files, one partition each")
    parser.add_argument("--reference", required=True, help="name of the reference")
    parser.add_argument("--out", required=True, help="the moment shard file to write (must not exist)")
    parser.add_argument("--sites", help="comma-separated site columns, in the reference's order (default: the files' order)")
    parser.add_argument("--calibration-fraction", type=float, default=0.2, help="the daemon's calibration_fraction (default 0.2)")
    parser.add_argument("--alpha", type=float, default=0.01, help="the reference's alpha (default 0.01)")
    parser.add_argument("--sample-size", type=int, default=5000, help="fit traces kept for the local terms (default 5000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes of a local cluster")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a local cluster)")
    parser.add_argument("--socket", help="import the result into the daemon on this socket once written")
    args = parser.parse_args(argv)
    if os.path.exists(args.out):
        parser.error(f"--out: {args.out!r} exists; a moment shard file is always written new")

    from distributed import Client as DaskClient, LocalCluster

    cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
    with DaskClient(args.scheduler or cluster) as dask:
        shard = fit_parquet(dask, args.partitions, args.reference, args.sites.split(",") if args.sites else None,
                            args.calibration_fraction, args.alpha, args.sample_size)
    if cluster is not None:
        cluster.close()
    shard.write(args.out)
    print(f"{args.out}: reference {shard.name!r}, {shard.count} fit traces, {len(shard.calibration)} calibration traces, "
          f"{len(shard.sample)} sampled, from {len(args.partitions)} partitions")
    if args.socket:
        from .client import Client

        with Client(args.socket) as client:
            reply = client.import_reference(args.out)
        print(f"imported {reply['reference']!r}: active, alpha {reply['alpha']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
