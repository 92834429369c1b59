import { close, closeSync, existsSync, fdatasync, fdatasyncSync, open, openSync } from "node:fs";

/**
 * Durability for an SQLite database in WAL mode with `synchronous=NORMAL`: COMMIT writes the WAL without waiting for
 * the disk, and this flushes the WAL file with fdatasync on libuv's thread pool, so the event loop keeps working
 * while the disk catches up. fsync flushes the file, not the descriptor, so our own descriptor covers what SQLite
 * wrote. Commits made while a flush runs share the next one (group commit).
 *
 * Callers treat a commit as durable only once `durable()` — called after COMMIT — resolves. A caller that waits
 * later can take a `mark()` right after its COMMIT and wait with `durableAfter(mark)`: a flush that started since
 * covers it, so it need not wait for the next one.
 */
export class GroupSync {
  private readonly walPath: string;
  private fd: number | undefined;
  private inFlight = false;
  /** Waiters for commits made before the flush in flight started. */
  private current: (() => void)[] = [];
  /** Waiters for commits made since: the next flush covers them. */
  private next: (() => void)[] = [];
  private nextRejects: ((e: Error) => void)[] = [];
  private currentRejects: ((e: Error) => void)[] = [];
  private closed = false;
  /** Marks handed out so far; a flush covers every mark up to the one current when it started. */
  private marks = 0;
  private inFlightCovers = 0;
  private completed = 0;

  constructor(databasePath: string) {
    this.walPath = `${databasePath}-wal`;
  }

  /** Resolves once everything committed before this call is on disk. */
  durable(): Promise<void> {
    return this.durableAfter(this.mark());
  }

  /** A position just after the caller's last COMMIT, for `durableAfter`. */
  mark(): number {
    return ++this.marks;
  }

  /** Resolves once everything committed before `mark` was taken is on disk. */
  durableAfter(mark: number): Promise<void> {
    if (this.closed) return Promise.reject(new Error("the database is closed"));
    return new Promise((resolve, reject) => {
      if (this.inFlight && mark <= this.inFlightCovers) {
        this.current.push(resolve);
        this.currentRejects.push(reject);
        return;
      }
      this.next.push(resolve);
      this.nextRejects.push(reject);
      if (!this.inFlight) this.flush();
    });
  }

  /** Flushes completed so far (for tests and diagnostics). */
  get flushes(): number {
    return this.completed;
  }

  private flush(): void {
    if (this.next.length === 0) return;
    this.inFlight = true;
    this.inFlightCovers = this.marks;
    this.current = this.next;
    this.currentRejects = this.nextRejects;
    this.next = [];
    this.nextRejects = [];
    const done = (error: NodeJS.ErrnoException | null) => {
      const resolves = this.current;
      const rejects = this.currentRejects;
      this.current = [];
      this.currentRejects = [];
      this.inFlight = false;
      this.completed++;
      if (this.closed) return;
      if (error) {
        const failure = new Error(`could not flush ${this.walPath} to disk: ${error.message}`);
        for (const reject of rejects) reject(failure);
      } else {
        for (const resolve of resolves) resolve();
      }
      if (!this.closed) this.flush();
    };
    if (this.fd !== undefined) {
      fdatasync(this.fd, done);
      return;
    }
    open(this.walPath, "r", (error, fd) => {
      if (error) return done(error);
      this.fd = fd;
      fdatasync(fd, done);
    });
  }

  /** Flushes the WAL synchronously: at open, so that whatever a crashed process left in it is on disk first. */
  flushNow(): void {
    if (!existsSync(this.walPath)) return;
    const fd = openSync(this.walPath, "r");
    try {
      fdatasyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Called after the database was closed (closing checkpoints the WAL into the database file and syncs it, so every
   * commit is on disk): settles whoever still waits, and releases the descriptor.
   */
  afterDatabaseClosed(): void {
    this.closed = true;
    for (const resolve of [...this.current, ...this.next]) resolve();
    this.current = [];
    this.next = [];
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      close(fd, () => {});
    }
  }
}
