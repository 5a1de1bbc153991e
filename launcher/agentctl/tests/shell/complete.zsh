# Types `agentctl run --prof` and a Tab into an interactive zsh (in a
# pseudo-terminal, zsh's own zpty) whose $fpath holds the completion
# script in $1, and prints what the line became.
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "fpath=($1 \$fpath); autoload -U compinit; compinit -u; PS1='%% '"
zpty -w -n z $'agentctl run --prof\t'
out=""
for i in {1..100}; do
  if zpty -r -t z chunk; then out+="$chunk"; else sleep 0.1; fi
  [[ $out == *"run --profile"* ]] && break
done
zpty -d z
print -r -- "$out" | tr -d '\r'
