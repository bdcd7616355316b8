"""tf.Transform run over raw examples as the Transform component runs it, for
the Trainer tests that need a real transform graph."""
from __future__ import annotations

import os
from typing import List

from feedrank import features as F


def analyze_and_transform(raw_files: List[str], out_dir: str, spec: F.FeatureSpec = F.BUILTIN):
    """tf.Transform over the raw examples of the feature contract ``spec`` (built-in unless
    given), with ``spec`` in ``custom_config`` as the pipeline passes it: returns (transformed
    examples file, TFTransformOutput); the graph is written to ``<out_dir>/transform_graph``."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    from feedrank.examples.tfdv_schema import make_schema
    from feedrank.transform.preprocessing import DECLARED_KEY, preprocessing_fn

    source = tfxio.TFExampleRecord(raw_files, schema=make_schema(spec))
    custom_config = {DECLARED_KEY: spec.to_json()}
    transformed_file = os.path.join(out_dir, "transformed.gz")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"), force_tf_compat_v1=False):
        raw = p | "Read" >> source.BeamSource()
        (transformed, metadata), transform_fn = (
            (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeAndTransformDataset(
                lambda inputs: preprocessing_fn(inputs, custom_config), output_record_batches=False))
        coder = tft.coders.ExampleProtoCoder(metadata.schema)
        _ = (transformed | "Encode" >> beam.Map(coder.encode)
             | "Write" >> beam.io.WriteToTFRecord(transformed_file, shard_name_template="",
                                                  compression_type=beam.io.filesystem.CompressionTypes.GZIP))
        _ = transform_fn | tft_beam.WriteTransformFn(os.path.join(out_dir, "transform_graph"))
    return transformed_file, tft.TFTransformOutput(os.path.join(out_dir, "transform_graph"))




def transform_splits(raw_dir: str, out_dir: str, schema, preprocessing_fn, splits=("train", "eval"),
                     shards=None):
    """tf.Transform as the Transform component runs it over an ExampleGen-style directory:
    analysed on ``raw_dir/Split-train``, every split of ``splits`` transformed into
    ``<out_dir>/transformed/Split-<split>/`` (GZIP, ``shards[split]`` files, 1 by default).
    ``preprocessing_fn`` takes the inputs.  Returns (transformed dir, transform graph dir)."""
    import apache_beam as beam
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.public import tfxio

    def source(split):
        return tfxio.TFExampleRecord(os.path.join(raw_dir, f"Split-{split}", "*"), schema=schema)

    transformed_dir, graph_dir = os.path.join(out_dir, "transformed"), os.path.join(out_dir, "transform_graph")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp"), force_tf_compat_v1=False):
        train = source("train")
        raw_train = p | "ReadTrain" >> train.BeamSource()
        transform_fn = ((raw_train, train.TensorAdapterConfig())
                        | tft_beam.AnalyzeDataset(preprocessing_fn))
        _ = transform_fn | tft_beam.WriteTransformFn(graph_dir)
        for split in splits:
            src = source(split)
            raw = raw_train if split == "train" else p | f"Read{split}" >> src.BeamSource()
            transformed, metadata = (((raw, src.TensorAdapterConfig()), transform_fn)
                                     | f"Transform{split}" >> tft_beam.TransformDataset(output_record_batches=False))
            coder = tft.coders.ExampleProtoCoder(metadata.schema)
            _ = (transformed | f"Encode{split}" >> beam.Map(coder.encode)
                 | f"Write{split}" >> beam.io.WriteToTFRecord(
                     os.path.join(transformed_dir, f"Split-{split}", "data"), file_name_suffix=".gz",
                     num_shards=(shards or {}).get(split, 1),
                     compression_type=beam.io.filesystem.CompressionTypes.GZIP))
    return transformed_dir, graph_dir
