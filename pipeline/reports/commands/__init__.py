"""One module per report command (`cityops report NAME`): its run function, its arguments and its `COMMAND`
line for the table in pipeline.reports.cli."""
