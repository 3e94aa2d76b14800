"""The driver: clocks, batch timing and job generation, the DAG scheduler, listeners."""
from dstream.driver.clock import Clock, ManualClock, SystemClock
from dstream.driver.dag import DAGScheduler, NarrowDependency, ShuffleDependency
from dstream.driver.jobs import BatchError, Job, JobGenerator, JobScheduler
from dstream.driver.listener import BatchInfo, ListenerBus, StreamingListener

__all__ = ["Clock", "ManualClock", "SystemClock", "DAGScheduler", "NarrowDependency", "ShuffleDependency",
           "BatchError", "Job", "JobGenerator", "JobScheduler", "BatchInfo", "ListenerBus",
           "StreamingListener"]
