# Main blocked on a channel when the last other tasklet ends gets the
# deadlock error.  Run: pypy3 main_deadlock.py  (expected: main_deadlock.out)
import stackless as sl

log = []
ch = sl.channel()

def ends():
    log.append("E ends")

sl.tasklet(ends)()
try:
    ch.receive()
except RuntimeError as e:
    log.append("main got RuntimeError: %s" % e)
for line in log:
    print(line)
