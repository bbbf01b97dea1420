"""A decision-level stand-in for the settings: every chosen task is executed perfectly, rewards follow the
Explore / Combi-Explore rules. Lets decider tests run without physics."""
from __future__ import annotations

from typing import Any

from metamanip.settings.objects import TASK_INSTRUCTIONS


class DecisionWorld:
    def __init__(self, setting: str, objects: list[str], feasible: dict[str, str], meta_task: Any,
                 num_trials: int = 4):
        self.setting = setting
        self.objects = objects
        self.feasible_tasks = dict(feasible)
        self.meta_task = meta_task
        self.num_trials = num_trials

    def task_instruction(self, task: str) -> str:
        return TASK_INSTRUCTIONS[task]

    def environment_description(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Objects: {', '.join(self.objects)}. Reply with the template."},
                {"role": "assistant", "content": "I understand."}]

    def _info(self, results, completed, decision_point=True) -> dict:
        explored = [o for o in self.objects if any(self.feasible_tasks[o] in r["completed_tasks"] for r in results)
                    or self.feasible_tasks[o] in completed]
        return {"episode_objects": list(self.objects), "trial_results": [dict(r) for r in results],
                "explored_objects": explored, "completed_tasks": list(completed), "meta_task": self.meta_task,
                "decision_point": decision_point, "trial": len(results),
                "feedback": {"train_feedback": "", "alt_feedback": "",
                             "lm_feedback": {"role": "user", "content": f"Trial {len(results) + 1}. Instruction?"}}}

    def play(self, decider) -> tuple[list[float], list]:
        """Run a whole episode; returns per-trial rewards and the decisions."""
        results: list[dict] = []
        decisions = []
        decider.reset_episode(self, self._info(results, []))
        for trial in range(self.num_trials):
            completed: list[str] = []
            reward = 0.0
            while True:
                if not completed and results:  # trial start: the settings still list the last trial's tasks
                    info = self._info(results, results[-1]["completed_tasks"])
                    info["trial_done"] = True
                else:
                    info = self._info(results, completed)
                d = decider.decide(self, info)
                decisions.append(d)
                completed.append(d.task)
                if self.setting == "combi_explore":
                    if all(t in completed for t in self.meta_task):
                        reward = 1.0
                        break
                    if len(completed) >= 2:
                        break
                else:
                    reward = float(d.task == self.meta_task)
                    break
            results.append({"trial": trial, "reward": reward, "steps": 10, "completed_tasks": completed})
        return [r["reward"] for r in results], decisions
