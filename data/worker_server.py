"""Imported only inside the DataLoader workers' fork server (`pipeline.worker_context`), never by vislab itself.

The server starts once per training process with torch and the shard reader already imported, so a worker
forked from it for each epoch starts in milliseconds. It ignores the stop signals that a terminal or Slurm
sends to the whole process group, as the workers do: if it died of them, the workers it forked would take
its death for their parent's (torch's watchdog) and quit while the training process writes its checkpoint.
"""

from vislab.data.pipeline import ignore_stop_signals

ignore_stop_signals(0)
