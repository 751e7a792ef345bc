"""lapa_sim: the simulated arm (Meta-World Sawyer tasks in MuJoCo) behind lapa_ros's interfaces."""
from .tasks import CameraSpec, TaskSpec, UnknownTaskError, get_task, load_catalogue, task_names

__all__ = ["CameraSpec", "TaskSpec", "UnknownTaskError", "get_task", "load_catalogue", "task_names"]
