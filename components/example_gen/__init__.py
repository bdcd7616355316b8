"""`BehaviorExampleGen`: validates the event log and writes DIN/DIEN tf.Examples."""
