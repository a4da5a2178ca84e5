# bash completion for pve-microseg: commands, options and guest NIC names.

# Guest NICs of this network namespace (sysfs may show another one).
_pve_microseg_nics() {
    local n
    while read -r n; do
        n=${n%%@*}
        [[ $n =~ ^(tap|veth)[1-9][0-9]*i(0|[1-9][0-9]*)$ ]] && printf '%s\n' "$n"
    done < <(ip -o link show 2>/dev/null | cut -d: -f2)
}

_pve_microseg() {
    local cur prev cmd i
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --output-format) COMPREPLY=($(compgen -W 'text json' -- "$cur")); return ;;
        --count|--timeout) return ;;
    esac
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
            --output-format|--count|--timeout) ((i++)) ;;
            -*) ;;
            *) cmd=${COMP_WORDS[i]}; break ;;
        esac
    done
    if [[ $cur == -* ]]; then
        local opts='--output-format'
        [[ $cmd == monitor ]] && opts+=' --count --timeout'
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case $cmd in
        '') COMPREPLY=($(compgen -W 'apply-full apply-iface clear status simulate monitor policy subsystems help' -- "$cur")) ;;
        apply-iface|simulate) COMPREPLY=($(compgen -W "$(_pve_microseg_nics)" -- "$cur")) ;;
    esac
}

complete -F _pve_microseg pve-microseg
