/** How times and names read on the page. */
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export function shortTime(iso: string): string {
  const date = new Date(iso);
  const today = new Date();
  return date.toDateString() === today.toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

export function fullTime(iso: string): string {
  return dateTimeFormat.format(new Date(iso));
}

export function preview(content: string, max = 60): string {
  const oneLine = content.replace(/\s+/g, ' ').trim();
  return oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine;
}

/** "Online", "Last seen 14:02" (or with the date when not today), or "Offline" for someone never seen. */
export function presenceText(presence: { online: boolean; lastSeenAt: string | null } | undefined): string {
  if (!presence) return '';
  if (presence.online) return 'Online';
  return presence.lastSeenAt ? `Last seen ${shortTime(presence.lastSeenAt)}` : 'Offline';
}
