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


