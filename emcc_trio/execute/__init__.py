"""Running what was built: a run's options (`options`), the jail and cgroup it runs in
(`runner`), and the node script that runs the artifact inside (`jailside/runner.js`)."""
