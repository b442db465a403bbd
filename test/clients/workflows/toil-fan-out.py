#!/usr/bin/python3
"""A Toil workflow of five jobs for the client tests: a parent spawns three children, each writes a
file into Toil's file store (the job store that the TES tasks mount writable), and a follow-on of the
parent joins their files in order. The leader exports the result to the path given last.

usage: run-toil.sh BASE_URL toil-fan-out.py OUTPUT_PATH
"""
import os

from toil.common import Toil
from toil.job import Job

# Toil's own worker needs a few hundred MB: a smaller request is killed by the real memory limit.
RESOURCES = {"cores": 1, "memory": "1G", "disk": "100M"}


def child(job, index):
    path = job.fileStore.getLocalTempFile()
    with open(path, "w") as f:
        f.write("child %d\n" % index)
    return job.fileStore.writeGlobalFile(path)


def join(job, file_ids):
    lines = []
    for file_id in file_ids:
        with open(job.fileStore.readGlobalFile(file_id)) as f:
            lines.append(f.read())
    path = job.fileStore.getLocalTempFile()
    with open(path, "w") as f:
        f.write("".join(lines))
        f.write("joined %d files\n" % len(file_ids))
    return job.fileStore.writeGlobalFile(path)


def parent(job):
    children = [job.addChildJobFn(child, i, **RESOURCES) for i in range(3)]
    return job.addFollowOnJobFn(join, [c.rv() for c in children], **RESOURCES).rv()


if __name__ == "__main__":
    parser = Job.Runner.getDefaultArgumentParser()
    parser.add_argument("output", help="where the leader writes the joined file")
    options = parser.parse_args()
    with Toil(options) as toil:
        result = toil.start(Job.wrapJobFn(parent, **RESOURCES))
        toil.exportFile(result, "file://" + os.path.abspath(options.output))
