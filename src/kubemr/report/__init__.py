"""The job report: what each task attempt did, where the time and bytes went, and the
reduce side's skew. :mod:`kubemr.report.records` builds and reads its data
(``_REPORT.json``)."""
