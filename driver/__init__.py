"""The driver: clocks, batch timing and job generation, the DAG scheduler, listeners."""
from driver.clock import Clock, ManualClock, SystemClock
from driver.dag import DAGScheduler, NarrowDependency, ShuffleDependency
from driver.jobs import BatchError, Job, JobGenerator, JobScheduler
from driver.listener import BatchInfo, ListenerBus, StreamingListener

__all__ = ["Clock", "ManualClock", "SystemClock", "DAGScheduler", "NarrowDependency", "ShuffleDependency",
           "BatchError", "Job", "JobGenerator", "JobScheduler", "BatchInfo", "ListenerBus",
           "StreamingListener"]
