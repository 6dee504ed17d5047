"""The kubemr controller: a level-triggered loop over MapReduceJob resources."""
