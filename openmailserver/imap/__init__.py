"""The IMAP server: IMAP4rev1 (RFC 3501) with its extensions, over the Maildir++ store.

Where things are, from the socket down:

* `server`: the listeners on ports 143 and 993 (start, stop, connection limit);
  `shared`: the state the sessions of a daemon share (`Shared`, the login
  cache, the cache warmer);
* `session`: one `Session` per connection: input, dispatch, tagged replies,
  buffered output; `handlers`: the command table (which function runs each
  command, in which states); `errors`: how a failing command ends (the one
  place where an exception becomes a tagged status);
* the command families, which take the session: `auth` (STARTTLS, LOGIN,
  AUTHENTICATE), `folders` (CREATE, DELETE, RENAME, SUBSCRIBE, LIST, LSUB,
  STATUS, NAMESPACE), `append` (APPEND), `idle` (IDLE), `selection` (SELECT,
  EXAMINE, CLOSE, UNSELECT and the routing of the selected-state commands);
* the selected state, which sees its session only through `context.Context`:
  `selected` (the `Selected` view of the folder, kept current), `fetch`,
  `flags` (STORE), `search`, `copy` (COPY, MOVE), and below them `message`
  (one message of the view) and `files` (reading and linking message files);
* `protocol`: the wire protocol (framing, parsing, serialisation), with no I/O
  and no imports from the rest of openmailserver.

Imports go downwards only: the selected-state modules never import `session`
or `server`, and nothing imports the command families but `handlers`.
"""
