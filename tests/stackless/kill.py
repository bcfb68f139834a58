# Kill as Stackless does it: TaskletExit raised inside the target at its
# suspension point; handlers run; then the killer continues.
# Run: pypy3 kill.py   (expected output: kill.out)
import stackless as sl

log = []
ch = sl.channel()

def blocked_with_cleanup():
    log.append("A start")
    try:
        ch.receive()
    finally:
        log.append("A cleanup")

def catcher():
    log.append("C start")
    try:
        ch.receive()
    except sl.TaskletExit:
        log.append("C caught kill")
    log.append("C goes on")

def bystander():
    log.append("B runs")

def self_killer():
    try:
        sl.getcurrent().kill()
    except sl.TaskletExit:
        log.append("S caught own kill")

# 1. kill of a blocked tasklet: its cleanup runs before kill() returns
a = sl.tasklet(blocked_with_cleanup)()
sl.schedule()                  # A runs and blocks
b = sl.tasklet(bystander)()    # B is runnable, behind main
log.append("main kills A")
a.kill()
log.append("main after kill")
log.append("A alive=%s" % a.alive)
sl.schedule()                  # now B
# 2. kill of a dead tasklet: no-op
a.kill()
log.append("kill dead: no error")
# 3. a kill that is caught
c = sl.tasklet(catcher)()
sl.schedule()
log.append("main kills C")
c.kill()
log.append("main after kill C")
# 4. self-kill
s = sl.tasklet(self_killer)()
sl.schedule()
# 5. a tasklet kills: the target runs first, then the killer, then the rest
a = sl.tasklet(blocked_with_cleanup)()
sl.schedule()
def killer():
    log.append("K kills A")
    a.kill()
    log.append("K after kill")
sl.tasklet(killer)()
sl.tasklet(bystander)()
sl.run()
log.append("done")
for line in log:
    print(line)
