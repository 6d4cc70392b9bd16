use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
pub struct TaskPool {
    sharing: Arc<Sharing>,
}

struct Sharing {
    // the tasks to be done by worker threads, and how many threads wait
    // for one (zync patch: counted under the same lock as the tasks)
    todo: Mutex<Todo>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,
}

// zync patch: upstream counted idle threads in an atomic that a woken thread
// decremented only once it had run again. Two tasks spawned before the first
// woken thread ran both saw it as idle: the second was queued with no thread
// left to take it, and waited until some other task ended. In handler mode a
// task is a whole connection, so a request (a browser's event stream) could
// wait for another keep-alive connection to time out, 15 s or more. Now a
// task is queued only while more threads wait than tasks are queued;
// otherwise it gets a thread of its own.
struct Todo {
    tasks: VecDeque<Box<dyn FnMut() + Send>>,
    // threads waiting on the condvar, woken or not yet running again
    idle: usize,
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

impl TaskPool {
    pub fn new() -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(Todo {
                    tasks: VecDeque::new(),
                    idle: 0,
                }),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
            }),
        };

        for _ in 0..MIN_THREADS {
            pool.add_thread(None)
        }

        pool
    }

    /// Executes a function in a thread.
    /// If no thread is available, spawns a new one.
    pub fn spawn(&self, code: Box<dyn FnMut() + Send>) {
        let mut todo = self.sharing.todo.lock().unwrap();

        if todo.idle > todo.tasks.len() {
            todo.tasks.push_back(code);
            self.sharing.condvar.notify_one();
        } else {
            drop(todo);
            self.add_thread(Some(code));
        }
    }

    fn add_thread(&self, initial_fn: Option<Box<dyn FnMut() + Send>>) {
        let sharing = self.sharing.clone();

        thread::spawn(move || {
            let sharing = sharing;
            let _active_guard = Registration::new(&sharing.active_tasks);

            if let Some(mut f) = initial_fn {
                f();
            }

            loop {
                let mut task: Box<dyn FnMut() + Send> = {
                    let mut todo = sharing.todo.lock().unwrap();

                    let task;
                    loop {
                        if let Some(poped_task) = todo.tasks.pop_front() {
                            task = poped_task;
                            break;
                        }
                        todo.idle += 1;

                        let received =
                            if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS {
                                todo = sharing.condvar.wait(todo).unwrap();
                                true
                            } else {
                                let (new_lock, waitres) = sharing
                                    .condvar
                                    .wait_timeout(todo, Duration::from_millis(5000))
                                    .unwrap();
                                todo = new_lock;
                                !waitres.timed_out()
                            };
                        todo.idle -= 1;

                        if !received && todo.tasks.is_empty() {
                            return;
                        }
                    }

                    task
                };

                task();
            }
        });
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    // zync patch: tasks that hold their thread (as a connection does) all
    // start, however fast they come, even while the pool's idle threads
    // are still waking up.
    #[test]
    fn every_task_starts_while_the_others_still_run() {
        for _ in 0..50 {
            let pool = TaskPool::new();
            // Let the first threads reach their wait.
            thread::sleep(Duration::from_millis(20));
            let (started, starts) = mpsc::channel();
            let release = Arc::new((Mutex::new(false), Condvar::new()));
            const N: usize = 12;
            for _ in 0..N {
                let (started, release) = (started.clone(), Arc::clone(&release));
                pool.spawn(Box::new(move || {
                    let _ = started.send(());
                    let (lock, cv) = &*release;
                    let mut go = lock.lock().unwrap();
                    while !*go {
                        go = cv.wait(go).unwrap();
                    }
                }));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            for n in 0..N {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    starts.recv_timeout(left).is_ok(),
                    "only {n} of {N} tasks started: the others wait for a thread"
                );
            }
            *release.0.lock().unwrap() = true;
            release.1.notify_all();
        }
    }
}
