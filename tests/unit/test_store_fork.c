/* A process that hosts the store forks children that never exec (the launcher's orphan guard, a
 * worker between fork and exec): they hold copies of the server's sockets. Connections the server
 * closes meanwhile must leave its epoll set at once, or events for freed connections follow (this was
 * a double free). The children here keep their copies while clients come and go. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/test_store_util.h"

int main(void) {
  int port;
  dtr_store_server *srv = start_server(&port);
  pid_t kids[4];
  int nkids = 0;
  for (int round = 0; round < 4; round++) {
    /* A connection that exists when the child is forked, then closed by the client. */
    dtr_store *c = connect_ok(port);
    CHECK(c != NULL);
    if (!c) break;
    CHECK_EQ_INT(dtr_store_set(c, "fork/k", "v", 1), DTR_OK);
    pid_t pid = fork();
    if (pid == 0) {
      sleep(30); /* hold every inherited descriptor; the parent kills us */
      _exit(0);
    }
    CHECK(pid > 0);
    if (pid > 0) kids[nkids++] = pid;
    dtr_store_close(c);
    /* The server now closes its side while the child still holds a copy. Keep it busy with other
     * clients: it must serve them and not touch the closed connection again. */
    for (int i = 0; i < 50; i++) {
      dtr_store *d = connect_ok(port);
      CHECK(d != NULL);
      if (!d) break;
      int64_t v = 0;
      CHECK_EQ_INT(dtr_store_add(d, "fork/count", 1, &v), DTR_OK);
      dtr_store_close(d);
    }
  }
  dtr_store *last = connect_ok(port);
  int64_t total = 0;
  CHECK(last != NULL);
  if (last) CHECK_EQ_INT(dtr_store_add(last, "fork/count", 0, &total), DTR_OK);
  CHECK_EQ_INT(total, 200);
  dtr_store_close(last);
  for (int i = 0; i < nkids; i++) {
    kill(kids[i], SIGKILL);
    waitpid(kids[i], NULL, 0);
  }
  dtr_store_server_destroy(srv);
  return TEST_EXIT();
}
