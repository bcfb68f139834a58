# tasklet.run(), remove(), insert(): order and errors.
# Run: pypy3 runq.py   (expected output: runq.out)
import stackless as sl

log = []
def named(n):
    def f():
        log.append(n)
    return f

# run(): the target runs at once, then the caller
# (PyPy's run() of a tasklet already in the queue appends it twice and
# crashes: the target here was removed first, so it is not in the queue)
a = sl.tasklet(named("A"))()
b = sl.tasklet(named("B"))()
b.remove()
log.append("main runs B")
b.run()
log.append("main after B.run")
sl.run()
# remove() / insert()
a = sl.tasklet(named("A"))()
b = sl.tasklet(named("B"))()
c = sl.tasklet(named("C"))()
b.remove()
log.append("B removed")
sl.run()
log.append("B alive=%s" % b.alive)
b.insert()
sl.run()
# error cases
ch = sl.channel()
def blocker():
    ch.receive()
t = sl.tasklet(blocker)()
sl.schedule()
for what, op in (("remove blocked", t.remove), ("insert blocked", t.insert),
                 ("run blocked", t.run), ("remove current", sl.getcurrent().remove)):
    try:
        op()
        log.append(what + ": ok")
    except RuntimeError as e:
        log.append(what + ": RuntimeError: " + str(e))
d = sl.tasklet(named("D"))()
sl.run()
for what, op in (("insert dead", d.insert), ("run dead", d.run)):
    try:
        op()
        log.append(what + ": ok")
    except RuntimeError as e:
        log.append(what + ": RuntimeError: " + str(e))
d.remove()
log.append("remove dead: ok")
for line in log:
    print(line)
