/** The label value of every user past the cap. */
export const OTHER_USERS = 'other';

/**
 * Bounded label values for user names: the first `cap` distinct users a process sees keep their
 * name, every later one is `other`. A user never moves from one label to another while the process
 * lives, so the counters under each label only grow (a "top N" that reshuffled would make a counter
 * drop under one label and jump under another, which rate() reads as a reset and a burst).
 */
export class UserLabels {
  private readonly named = new Set<string>();

  constructor(readonly cap: number) {}

  labelOf(user: string): string {
    if (this.named.has(user)) return user;
    // A real user called `other` would be mixed with the rest: keep it apart.
    if (user === OTHER_USERS) return `${OTHER_USERS}_`;
    if (this.named.size >= this.cap) return OTHER_USERS;
    this.named.add(user);
    return user;
  }
}
