# The text of the image's /etc/passwd, /etc/group and /etc/shadow. Pure, like config.nix.
#
# Unlike nix2gpu's, /etc/group lists every account that has a group as a supplementary group
# (nix2gpu's member lists were always empty), and root's password field is `*` (no password
# login, not locked): OpenSSH without PAM refuses even key logins to a locked (`!`) account.
# nix2gpu-init sets root's password at boot when one is configured.
{
  # root's login shell.
  shell,
  # The login shell of system accounts.
  nologin,
}:
let
  inherit (builtins)
    concatStringsSep
    elem
    filter
    genList
    ;

  lines = entries: concatStringsSep "\n" entries + "\n";

  buildUsers = genList (i: {
    name = "nixbld${toString (i + 1)}";
    uid = 30001 + i;
    gid = 30000;
    groups = [ "nixbld" ];
    home = "/var/empty";
    shell = nologin;
    description = "Nix build user ${toString (i + 1)}";
    password = "!";
  }) 32;

  users = [
    {
      name = "root";
      uid = 0;
      gid = 0;
      groups = [ "root" ];
      home = "/root";
      inherit shell;
      description = "System administrator";
      password = "*";
    }
    {
      name = "sshd";
      uid = 74;
      gid = 74;
      groups = [ "sshd" ];
      home = "/var/empty";
      shell = nologin;
      description = "SSH privilege separation";
      password = "!";
    }
    {
      name = "nobody";
      uid = 65534;
      gid = 65534;
      groups = [ "nogroup" ];
      home = "/var/empty";
      shell = nologin;
      description = "Unprivileged account";
      password = "!";
    }
  ]
  ++ buildUsers;

  groups = [
    {
      name = "root";
      gid = 0;
    }
    {
      name = "sshd";
      gid = 74;
    }
    {
      name = "nixbld";
      gid = 30000;
    }
    {
      name = "nogroup";
      gid = 65534;
    }
  ];

  membersOf = group: map (user: user.name) (filter (user: elem group.name user.groups) users);
in
{
  passwd = lines (
    map (
      u: "${u.name}:x:${toString u.uid}:${toString u.gid}:${u.description}:${u.home}:${u.shell}"
    ) users
  );
  group = lines (
    map (g: "${g.name}:x:${toString g.gid}:${concatStringsSep "," (membersOf g)}") groups
  );
  # name:password:last change (days since 1970; 1 = long ago):min:max:warn:inactive:expire:
  shadow = lines (map (u: "${u.name}:${u.password}:1:0:99999:7:::") users);
}
