# The main tasklet: run(), uncaught errors, deadlock.
# Run: pypy3 main.py   (expected output: main.out)
import stackless as sl

log = []
ch = sl.channel()

def fails():
    log.append("F runs")
    raise ValueError("boom")

def later():
    log.append("L runs")

# 1. an uncaught error of another tasklet is raised in main by run()
sl.tasklet(fails)()
sl.tasklet(later)()
try:
    sl.run()
    log.append("run returned")
except ValueError as e:
    log.append("main got ValueError from run: %s" % e)
sl.run()
# 2. the last runnable tasklet that tries to block while main is blocked
#    gets the deadlock error: PyPy's emulation asserts there, so that rule
#    comes from the C source alone (tests/test_stackless.c).
# 3. main blocked when the last tasklet ends: main_deadlock.py (PyPy's
#    run() leaves main in its list of run() callers, so it needs a fresh
#    process).
for line in log:
    print(line)
