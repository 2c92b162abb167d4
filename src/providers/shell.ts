/** Quotes one word for a POSIX shell: what sshd and git's `!` helpers hand commands to. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
