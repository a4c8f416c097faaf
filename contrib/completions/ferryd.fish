# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ferryd_global_optspecs
    string join \n config= data-dir= database-url= listen= passive-ports= passive-address= anonymous-root= tls-cert= tls-key= implicit-tls-listen= require-tls-login require-tls-data require-tls-resumption registration= max-registrations-per-ip-per-hour= default-quota-bytes= default-quota-files= pbkdf2-iterations= max-sessions= max-sessions-per-ip= login-timeout-secs= idle-timeout-secs= data-timeout-secs= keep-partial-uploads= login-failure-delay-ms= max-login-failures= ban-after-failures= ban-window-secs= ban-secs= max-password-checks-per-ip= max-sessions-per-user= max-transfers-per-user= max-upload-rate-per-user= max-download-rate-per-user= max-upload-rate= max-download-rate= max-bad-commands= audit-max-bytes= audit-keep= audit-min-free-bytes= storage= s3-bucket= s3-prefix= s3-endpoint= s3-region= s3-allow-http s3-max-rename-objects= s3-rewrite-max-bytes= node-name= shared-local-storage proxy-protocol-from= admin-listen= admin-token-file= h/help V/version
end

function __fish_ferryd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ferryd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ferryd_using_subcommand
    set -l cmd (__fish_ferryd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ferryd -n "__fish_ferryd_needs_command" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l listen -d 'Control-channel address; repeat for several (IPv4 and IPv6). Default 127.0.0.1:2121' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l passive-ports -d 'Passive data ports, LOW-HIGH. Default: any port from the OS' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l passive-address -d 'IPv4 address announced in PASV replies (behind NAT)' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l anonymous-root -d 'Serve this directory read-only to `anonymous` / `ftp` (any password; local storage only). Default: off' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l tls-cert -d 'PEM certificate chain for FTPS (AUTH TLS and implicit TLS)' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l tls-key -d 'PEM private key for --tls-cert' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l implicit-tls-listen -d 'Address for implicit FTPS (TLS from the first byte; port 990 in production). Repeatable' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l registration -d 'Whether SITE REGISTER is accepted (invite: only with a code from `ferryd invite`)' -r -f -a "open\t'Anyone may register an account before logging in'
closed\t'Only the operator creates accounts (`ferryd user add`)'
invite\t'Registration needs an invitation code from `ferryd invite create`: `SITE REGISTER <user> <password> <code>`'"
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-registrations-per-ip-per-hour -d 'Accounts one client address may register per hour. Default 30' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l default-quota-bytes -d 'Byte limit for newly registered accounts. Default: none' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l default-quota-files -d 'File limit (files and directories) for new accounts (0: none). Default 10000' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l pbkdf2-iterations -d 'PBKDF2 rounds for new password hashes. Default 600000' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-sessions -d 'Control connections in all. Default 2000' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-sessions-per-ip -d 'Control connections per client address. Default 200' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l login-timeout-secs -d 'Seconds to log in after connecting. Default 60' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l idle-timeout-secs -d 'Seconds without a command before the server closes the session. Default 300' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l data-timeout-secs -d 'Seconds to wait for a data connection or for transfer progress. Default 60' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l keep-partial-uploads -d 'Keep what an interrupted STOR of a new name received, to be resumed (true or false). Default true' -r -f -a "true\t''
false\t''"
complete -c ferryd -n "__fish_ferryd_needs_command" -l login-failure-delay-ms -d 'Delay of the first 530 after a wrong password, doubling per failure. Default 1000' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-login-failures -d 'Failed passwords on one connection before it is closed. Default 3' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l ban-after-failures -d 'Failed logins from one address within --ban-window-secs that ban it (0: never). Default 10' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l ban-window-secs -d 'Window for --ban-after-failures. Default 600' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l ban-secs -d 'How long a banned address is refused. Default 900' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-password-checks-per-ip -d 'Password hashes one address may have running or queued at once (0: no limit). Default 2' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-sessions-per-user -d 'Logged-in sessions per user (0: no limit). Default 0' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-transfers-per-user -d 'Concurrent uploads and downloads per user, listings apart (0: no limit). Default 0' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-upload-rate-per-user -d 'Bytes per second for all of one user\'s uploads together (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-download-rate-per-user -d 'Bytes per second for all of one user\'s downloads together (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-upload-rate -d 'Bytes per second for all uploads on the server (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-download-rate -d 'Bytes per second for all downloads on the server (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l max-bad-commands -d 'Consecutive malformed or unknown commands that close the session (0: never). Default 10' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l audit-max-bytes -d 'Size at which audit.jsonl and xferlog rotate (0: never). Default 64 MiB' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l audit-keep -d 'Rotated files kept of each log. Default 5' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l audit-min-free-bytes -d 'Free bytes below which only forensic audit events are written (0: no floor). Default 256 MiB' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l storage -d 'Where the files are kept: the home directories under the data dir, or an S3 bucket. Default local' -r -f -a "local\t'The home directories under the data dir'
s3\t'An S3-compatible bucket (`s3_bucket`, keys `<s3_prefix>/<user>/<path>`)'"
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-bucket -d 'The S3 bucket (required with --storage s3). Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the file), never from a flag' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-prefix -d 'Key prefix in the bucket: keys are PREFIX/USER/PATH. Default: none' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-endpoint -d 'The S3 server\'s URL (MinIO, Ceph RGW, Garage, R2). Default: AWS' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-region -d 'The bucket\'s region. Default us-east-1' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-max-rename-objects -d 'Objects a directory rename may copy on S3; a bigger directory is refused. Default 1000' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-rewrite-max-bytes -d 'Largest object APPE or REST+STOR may rewrite on S3. Default 512 MiB' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l node-name -d 'This node\'s name in logs, audit events and the database. Default: the host name' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l proxy-protocol-from -d 'A load balancer\'s network (CIDR, repeatable): connections from it must begin with a PROXY protocol v1/v2 header naming the client' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l admin-listen -d 'The admin HTTP listener (/metrics, /health, /ready), e.g. 127.0.0.1:9121. Default: off' -r
complete -c ferryd -n "__fish_ferryd_needs_command" -l admin-token-file -d 'A file with the bearer token the admin listener requires (needed off loopback)' -r -F
complete -c ferryd -n "__fish_ferryd_needs_command" -l require-tls-login -d 'Refuse USER/PASS and SITE REGISTER before AUTH TLS'
complete -c ferryd -n "__fish_ferryd_needs_command" -l require-tls-data -d 'Refuse transfers over unencrypted data connections (PROT C)'
complete -c ferryd -n "__fish_ferryd_needs_command" -l require-tls-resumption -d 'Protected data connections must resume the control connection\'s TLS session'
complete -c ferryd -n "__fish_ferryd_needs_command" -l s3-allow-http -d 'Allow a plain http:// S3 endpoint (unencrypted)'
complete -c ferryd -n "__fish_ferryd_needs_command" -l shared-local-storage -d 'With --database-url and local storage: the data dir is one file system every node shares (NFS, CephFS)'
complete -c ferryd -n "__fish_ferryd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ferryd -n "__fish_ferryd_needs_command" -s V -l version -d 'Print version'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "serve" -d 'Run the server (the default)'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "user" -d 'Manage accounts'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "log" -d 'Show the audit log as a table'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "cert" -d 'TLS certificates'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "invite" -d 'Invitation codes for `registration = "invite"`'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "who" -d 'Show the live sessions of a running server (through its admin listener)'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "kick" -d 'End a live session of a running server: its transfer gets 426, then the session 421'
complete -c ferryd -n "__fish_ferryd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l listen -d 'Control-channel address; repeat for several (IPv4 and IPv6). Default 127.0.0.1:2121' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l passive-ports -d 'Passive data ports, LOW-HIGH. Default: any port from the OS' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l passive-address -d 'IPv4 address announced in PASV replies (behind NAT)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l anonymous-root -d 'Serve this directory read-only to `anonymous` / `ftp` (any password; local storage only). Default: off' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l tls-cert -d 'PEM certificate chain for FTPS (AUTH TLS and implicit TLS)' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l tls-key -d 'PEM private key for --tls-cert' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l implicit-tls-listen -d 'Address for implicit FTPS (TLS from the first byte; port 990 in production). Repeatable' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l registration -d 'Whether SITE REGISTER is accepted (invite: only with a code from `ferryd invite`)' -r -f -a "open\t'Anyone may register an account before logging in'
closed\t'Only the operator creates accounts (`ferryd user add`)'
invite\t'Registration needs an invitation code from `ferryd invite create`: `SITE REGISTER <user> <password> <code>`'"
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-registrations-per-ip-per-hour -d 'Accounts one client address may register per hour. Default 30' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l default-quota-bytes -d 'Byte limit for newly registered accounts. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l default-quota-files -d 'File limit (files and directories) for new accounts (0: none). Default 10000' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l pbkdf2-iterations -d 'PBKDF2 rounds for new password hashes. Default 600000' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-sessions -d 'Control connections in all. Default 2000' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-sessions-per-ip -d 'Control connections per client address. Default 200' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l login-timeout-secs -d 'Seconds to log in after connecting. Default 60' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l idle-timeout-secs -d 'Seconds without a command before the server closes the session. Default 300' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l data-timeout-secs -d 'Seconds to wait for a data connection or for transfer progress. Default 60' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l keep-partial-uploads -d 'Keep what an interrupted STOR of a new name received, to be resumed (true or false). Default true' -r -f -a "true\t''
false\t''"
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l login-failure-delay-ms -d 'Delay of the first 530 after a wrong password, doubling per failure. Default 1000' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-login-failures -d 'Failed passwords on one connection before it is closed. Default 3' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l ban-after-failures -d 'Failed logins from one address within --ban-window-secs that ban it (0: never). Default 10' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l ban-window-secs -d 'Window for --ban-after-failures. Default 600' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l ban-secs -d 'How long a banned address is refused. Default 900' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-password-checks-per-ip -d 'Password hashes one address may have running or queued at once (0: no limit). Default 2' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-sessions-per-user -d 'Logged-in sessions per user (0: no limit). Default 0' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-transfers-per-user -d 'Concurrent uploads and downloads per user, listings apart (0: no limit). Default 0' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-upload-rate-per-user -d 'Bytes per second for all of one user\'s uploads together (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-download-rate-per-user -d 'Bytes per second for all of one user\'s downloads together (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-upload-rate -d 'Bytes per second for all uploads on the server (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-download-rate -d 'Bytes per second for all downloads on the server (0: no limit)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l max-bad-commands -d 'Consecutive malformed or unknown commands that close the session (0: never). Default 10' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l audit-max-bytes -d 'Size at which audit.jsonl and xferlog rotate (0: never). Default 64 MiB' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l audit-keep -d 'Rotated files kept of each log. Default 5' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l audit-min-free-bytes -d 'Free bytes below which only forensic audit events are written (0: no floor). Default 256 MiB' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l storage -d 'Where the files are kept: the home directories under the data dir, or an S3 bucket. Default local' -r -f -a "local\t'The home directories under the data dir'
s3\t'An S3-compatible bucket (`s3_bucket`, keys `<s3_prefix>/<user>/<path>`)'"
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-bucket -d 'The S3 bucket (required with --storage s3). Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the file), never from a flag' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-prefix -d 'Key prefix in the bucket: keys are PREFIX/USER/PATH. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-endpoint -d 'The S3 server\'s URL (MinIO, Ceph RGW, Garage, R2). Default: AWS' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-region -d 'The bucket\'s region. Default us-east-1' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-max-rename-objects -d 'Objects a directory rename may copy on S3; a bigger directory is refused. Default 1000' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-rewrite-max-bytes -d 'Largest object APPE or REST+STOR may rewrite on S3. Default 512 MiB' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l node-name -d 'This node\'s name in logs, audit events and the database. Default: the host name' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l proxy-protocol-from -d 'A load balancer\'s network (CIDR, repeatable): connections from it must begin with a PROXY protocol v1/v2 header naming the client' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l admin-listen -d 'The admin HTTP listener (/metrics, /health, /ready), e.g. 127.0.0.1:9121. Default: off' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l admin-token-file -d 'A file with the bearer token the admin listener requires (needed off loopback)' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l require-tls-login -d 'Refuse USER/PASS and SITE REGISTER before AUTH TLS'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l require-tls-data -d 'Refuse transfers over unencrypted data connections (PROT C)'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l require-tls-resumption -d 'Protected data connections must resume the control connection\'s TLS session'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l s3-allow-http -d 'Allow a plain http:// S3 endpoint (unencrypted)'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -l shared-local-storage -d 'With --database-url and local storage: the data dir is one file system every node shares (NFS, CephFS)'
complete -c ferryd -n "__fish_ferryd_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "add" -d 'Create an account (and its home directory)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "del" -d 'Delete an account. Its home directory and usage ledger are kept (and keep the name reserved) unless --purge is given'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "passwd" -d 'Set an account\'s password'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "disable" -d 'Disable an account: it cannot log in, and its live sessions end (on every node)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "enable" -d 'Enable a disabled account again'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "list" -d 'List accounts'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "quota" -d 'Show an account\'s usage and limits; set limits; recount usage from the home directory'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and not __fish_seen_subcommand_from add del passwd disable enable list quota help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l iterations -d 'PBKDF2 rounds for this account\'s hash. Default: the configuration\'s' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l password-stdin -d 'Read the password from one line of standard input instead of a prompt'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l read-only -d 'The account may list and download but never write'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -l adopt-home -d 'Give the new account the home (and usage) a deleted account of this name left; without it such remains refuse the name'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from del" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from del" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from del" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from del" -l purge -d 'Also remove the home directory and the usage ledger (also those of an account deleted earlier), which frees the name'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from del" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from passwd" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from passwd" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from passwd" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from passwd" -l password-stdin -d 'Read the password from one line of standard input instead of a prompt'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from passwd" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from disable" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from disable" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from disable" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from enable" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from enable" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from enable" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from list" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from list" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from list" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l bytes -d 'Byte limit: a number, or `none` for unlimited' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l files -d 'File limit (files and directories): a number, or `none` for unlimited' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -l recount -d 'Recompute the usage from the home directory (after changes behind the server\'s back)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from quota" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "add" -d 'Create an account (and its home directory)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "del" -d 'Delete an account. Its home directory and usage ledger are kept (and keep the name reserved) unless --purge is given'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "passwd" -d 'Set an account\'s password'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Disable an account: it cannot log in, and its live sessions end (on every node)'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Enable a disabled account again'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "list" -d 'List accounts'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "quota" -d 'Show an account\'s usage and limits; set limits; recount usage from the home directory'
complete -c ferryd -n "__fish_ferryd_using_subcommand user; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l user -d 'Only this user\'s events' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l event -d 'Only events of this kind (e.g. login_failed, upload, download, command)' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l tail -d 'Only the last N events' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l node -d 'Only events of this node' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand log" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -f -a "generate" -d 'Write a self-signed certificate (DIR/cert.pem) and key (DIR/key.pem) for localhost, to try FTPS out'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and not __fish_seen_subcommand_from generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from generate" -l out -d 'Where to write the files' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from generate" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from generate" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from generate" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Write a self-signed certificate (DIR/cert.pem) and key (DIR/key.pem) for localhost, to try FTPS out'
complete -c ferryd -n "__fish_ferryd_using_subcommand cert; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -f -a "create" -d 'Create a random invitation code and print it'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -f -a "list" -d 'List the codes with their uses left'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and not __fish_seen_subcommand_from create list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from create" -l uses -d 'How many registrations the code allows' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from create" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from create" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from create" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from list" -l config -d 'TOML configuration file; flags override it' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from list" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from list" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a random invitation code and print it'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the codes with their uses left'
complete -c ferryd -n "__fish_ferryd_using_subcommand invite; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -l admin -d 'The admin listener, ADDR:PORT or http://ADDR:PORT. Default: admin_listen of --config' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -l admin-token-file -d 'The file with its bearer token. Default: admin_token_file of --config' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -l config -d 'The server\'s configuration file, for admin_listen and admin_token_file' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand who" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -l admin -d 'The admin listener, ADDR:PORT or http://ADDR:PORT. Default: admin_listen of --config' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -l admin-token-file -d 'The file with its bearer token. Default: admin_token_file of --config' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -l config -d 'The server\'s configuration file, for admin_listen and admin_token_file' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -l data-dir -d 'Data directory (accounts/, home/, log/, tmp/). Default ./var' -r -F
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -l database-url -d 'Keep accounts and the shared state in PostgreSQL: `postgres://USER[:PASS]@HOST:PORT/DB` (the password better comes from PGPASSWORD or database_password_file). The operator commands work on the database then. Default: none' -r
complete -c ferryd -n "__fish_ferryd_using_subcommand kick" -s h -l help -d 'Print help'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "serve" -d 'Run the server (the default)'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "user" -d 'Manage accounts'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "log" -d 'Show the audit log as a table'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "cert" -d 'TLS certificates'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "invite" -d 'Invitation codes for `registration = "invite"`'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "who" -d 'Show the live sessions of a running server (through its admin listener)'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "kick" -d 'End a live session of a running server: its transfer gets 426, then the session 421'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and not __fish_seen_subcommand_from serve user log cert invite who kick help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "add" -d 'Create an account (and its home directory)'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "del" -d 'Delete an account. Its home directory and usage ledger are kept (and keep the name reserved) unless --purge is given'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "passwd" -d 'Set an account\'s password'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "disable" -d 'Disable an account: it cannot log in, and its live sessions end (on every node)'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "enable" -d 'Enable a disabled account again'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "list" -d 'List accounts'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from user" -f -a "quota" -d 'Show an account\'s usage and limits; set limits; recount usage from the home directory'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from cert" -f -a "generate" -d 'Write a self-signed certificate (DIR/cert.pem) and key (DIR/key.pem) for localhost, to try FTPS out'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from invite" -f -a "create" -d 'Create a random invitation code and print it'
complete -c ferryd -n "__fish_ferryd_using_subcommand help; and __fish_seen_subcommand_from invite" -f -a "list" -d 'List the codes with their uses left'
