"""Inspection reports of an OUT_DIR: the self-contained HTML (`inspect --html`) and `sftprep stats`."""

from sftprep.report.commands import html_report, stats_command

__all__ = ["html_report", "stats_command"]
