"""LatestBlessedModel: the baseline the Evaluator compares a candidate against."""
