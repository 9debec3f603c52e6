"""What the pipeline passes along: observations, verdicts, failure strings, the verdict vocabulary."""
